#!/usr/bin/env bash
# Installs what Cairn's build, tests and benchmarks need on a fresh Debian 12 machine with the .NET 10 SDK,
# then restores NuGet packages. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real protocol peers the tests drive: libnbd tools, fio's nbd engine, qemu-img, nbdkit (benchmark peer),
# the kernel NBD client, etcd for the cluster tests, and libiscsi-bin (iscsi-ls, iscsi-inq, iscsi-test-cu) for the
# iSCSI tests; qemu-block-extra holds qemu-img's iscsi:// driver, a mere Recommends of qemu-utils that --no-install-recommends skips.
# The kernel-initiator tests boot a QEMU guest (scripts/guest: qemu-system-x86, xz-utils to unpack Debian's kernel)
# and read the ext4 file system the guest made (e2fsprogs' debugfs); the guest's own packages stay off the host.
# The multi-process fault runs (tests/Shared/NetnsCluster.cs) need iproute2 (ip netns, veth, bridge) and build their
# failing drive from nbdkit's error filter, libnbd-bin's nbdfuse, util-linux's losetup and e2fsprogs' mkfs.ext4 (and
# e2fsck, which repairs it after errors).
PACKAGES=(libnbd-bin fio qemu-utils qemu-block-extra nbdkit nbd-client etcd-server libiscsi-bin qemu-system-x86 xz-utils e2fsprogs iproute2)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v dotnet >/dev/null; then
  echo "setup: the .NET 10 SDK is required (dotnet not found on PATH)" >&2
  exit 1
fi
dotnet restore Cairn.slnx --nologo -v quiet

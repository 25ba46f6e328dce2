#!/usr/bin/env bash
# Boots the test guest (built by build.sh) under QEMU's TCG and runs one scenario in it; the serial console is
# this script's stdout and QEMU exits when the guest powers off.
#
#   scripts/guest/run.sh SCENARIO [cairn.NAME=VALUE ...]
#
# SCENARIO is a name from scripts/guest/scenarios/ (iscsi, nbd) or the path of a script of your own; it reaches the
# guest through fw_cfg, so changing it needs no rebuild. cairn.NAME=VALUE words go on the kernel command line and
# become CAIRN_NAME variables in the scenario (for example cairn.port=3260 cairn.volume=db1 cairn.lines=500000).
# Targets on the host's loopback are reached from the guest as 10.0.2.2 (QEMU user-mode networking).
# CAIRN_GUEST_TIMEOUT_S (default 600) bounds the run: QEMU is killed then, even if whoever started it is gone.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
(($# >= 1)) || { sed -n 's/^# \{0,1\}//; 5,11p' "$0" >&2; exit 2; }
scenario=$1
shift
[[ -f $scenario ]] || scenario=$HERE/scenarios/$scenario.sh
[[ -f $scenario ]] || { echo "guest-run: no scenario file $scenario (the named ones are in $HERE/scenarios)" >&2; exit 2; }
for word in "$@"; do
  [[ $word =~ ^cairn\.[a-z0-9_.-]+=[^[:space:]]+$ ]] || { echo "guest-run: '$word' is not cairn.NAME=VALUE" >&2; exit 2; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "guest-run: qemu-system-x86_64 is missing: run scripts/setup.sh" >&2; exit 1; }

out=$("$HERE/build.sh" | tail -1)

# TCG, not KVM: guests hang under this host's KVM, and TCG boots the uncompressed kernel in seconds anyway.
# -no-reboot and panic=-1 make any guest crash end QEMU instead of looping; romfile= skips the NIC's PXE ROM.
exec timeout -s KILL "${CAIRN_GUEST_TIMEOUT_S:-600}" qemu-system-x86_64 \
  -accel tcg -m 512 -smp 1 \
  -nodefaults -no-user-config -display none -monitor none -serial stdio -no-reboot \
  -kernel "$out/vmlinux" -initrd "$out/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 cairn.scenario=$(basename "$scenario" .sh) $*" \
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile= \
  -fw_cfg "name=opt/cairn/scenario,file=$scenario"

#!/usr/bin/env bash
# Builds the QEMU test guest: Debian's kernel (uncompressed, because TCG boots an ELF vmlinux directly and fast)
# and an initramfs holding busybox, the kernel initiators' modules and tools (open-iscsi, nbd-client, mkfs.ext4)
# and scripts/guest/init. Nothing is installed on the host: guest packages are fetched with `apt-get download`
# and unpacked with `dpkg -x` under .artifacts/guest/.
#
# Idempotent: the output is rebuilt only when an input changes (the exact package versions, this script, init,
# guest-lib.sh). Prints the output directory (holding vmlinux, initramfs.cpio.gz, kernel-release) on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${CAIRN_GUEST_CACHE:-$ROOT/.artifacts/guest}
OUT=$CACHE/out

# Guest-only packages, never installed on the host. Their shared libraries come from Debian packages too (the
# lib* closure of their dependencies), so the guest does not depend on what the host happens to have installed.
KERNEL_META=linux-image-amd64
TOOL_PACKAGES=(busybox-static open-iscsi e2fsprogs nbd-client)
# Modules the scenarios load (dependencies follow from modules.dep): the virtio NIC, SCSI disks and the iSCSI
# initiator, the NBD client, ext4 and the crc32c it checksums with, and fw_cfg to receive the scenario script.
MODULES=(virtio_pci virtio_net sd_mod iscsi_tcp nbd ext4 crc32c_generic qemu_fw_cfg)
GUEST_BINARIES=(sbin/iscsiadm sbin/iscsid sbin/nbd-client sbin/mke2fs)

log() { echo "guest-build: $*" >&2; }
die() { echo "guest-build: $*" >&2; exit 1; }

# linux-image-amd64 is a meta package; the real image is its one linux-image-* dependency.
kernel_package() {
  apt-cache depends "$KERNEL_META" | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1 \
    | grep . || die "cannot resolve $KERNEL_META to a kernel image package (run apt-get update?)"
}

# The lib* packages the tools depend on, transitively; following only libraries keeps udev, debconf and perl out.
library_closure() {
  local seen=" " queue="$*" next package
  while [[ -n $queue ]]; do
    next=""
    for package in $(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances $queue | sed -n 's/^ *\(Pre\)\{0,1\}Depends: \(lib[^ <]*\)$/\2/p' | sort -u); do
      [[ $seen == *" $package "* ]] && continue
      seen+="$package "
      next+=" $package"
    done
    queue=$next
  done
  echo $seen
}

# The exact .deb file names (name_version_arch) apt would fetch today: the build's package inputs.
deb_files() {
  apt-get download --print-uris "$@" 2>/dev/null | awk '{print $2}' | LC_ALL=C sort
}

# Downloads the packages whose exact file is not cached yet.
fetch_debs() {
  local missing=() file
  for file in "$@"; do
    [[ -f $CACHE/debs/$file ]] || missing+=("${file%%_*}=$(sed 's/^[^_]*_\([^_]*\)_.*/\1/; s/%3a/:/' <<<"$file")")
  done
  ((${#missing[@]})) || return 0
  log "downloading ${missing[*]}"
  (cd "$CACHE/debs" && apt-get download -qq "${missing[@]}" 2>&1 | grep -v "unsandboxed" >&2 || true)
  for file in "$@"; do
    [[ -f $CACHE/debs/$file ]] || die "apt-get download did not fetch $file (stale package lists? run apt-get update)"
  done
}

# Drops cached packages of versions the build no longer uses (the kernel alone is 70 MB).
prune_debs() {
  local file
  for file in "$CACHE"/debs/*.deb; do
    grep -qxF "$(basename "$file")" <<<"$1" || rm -f "$file"
  done
}

# The kernel ships as a bzImage whose payload is compressed (xz for Debian); find the stream by its magic and
# unpack it to the ELF vmlinux that QEMU loads through the PVH entry point. xz ends with an error on the length
# word the kernel build appends after the stream, so what counts is a whole ELF image coming out.
extract_vmlinux() {
  local bzimage=$1 target=$2 offset
  for offset in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bzimage" | cut -d: -f1); do
    tail -c +$((offset + 1)) "$bzimage" | xz -dc >"$target.tmp" 2>/dev/null || true
    if whole_elf "$target.tmp"; then
      mv "$target.tmp" "$target"
      return 0
    fi
  done
  rm -f "$target.tmp"
  die "no xz-compressed ELF kernel found inside $bzimage"
}

# An ELF64 file whose section header table (e_shoff + e_shnum * e_shentsize) lies inside it: not cut short.
whole_elf() {
  local file=$1 size shoff shentsize shnum
  [[ -s $file && $(head -c 4 "$file" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] || return 1
  size=$(stat -c %s "$file")
  shoff=$(od -An -t u8 -j 40 -N 8 "$file" | tr -d ' ')
  shentsize=$(od -An -t u2 -j 58 -N 2 "$file" | tr -d ' ')
  shnum=$(od -An -t u2 -j 60 -N 2 "$file" | tr -d ' ')
  ((shoff > 0 && shoff + shnum * shentsize <= size))
}

# Copies a module and everything modules.dep says it needs.
stage_module() {
  local name=$1 release=$2 unpacked=$3 stage=$4 line path
  line=$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$unpacked/lib/modules/$release/modules.dep" | head -1) \
    || die "kernel $release has no module $name"
  for path in ${line/:/}; do
    mkdir -p "$stage/lib/modules/$release/$(dirname "$path")"
    cp "$unpacked/lib/modules/$release/$path" "$stage/lib/modules/$release/$path"
  done
}

# Copies a binary and the shared libraries it loads, as the guest's own loader resolves them among the unpacked
# packages (the host's ldd would pair the host's loader with the packages' libc, which need not match).
stage_binary() {
  local binary=$1 unpacked=$2 stage=$3 listing lib dest
  local libdirs=$unpacked/lib/x86_64-linux-gnu:$unpacked/usr/lib/x86_64-linux-gnu
  # The package's /lib64 entry is an absolute symlink (to the host's loader); the file itself is the guest's.
  local loader=$unpacked/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
  mkdir -p "$stage/$(dirname "$binary")"
  cp "$unpacked/$binary" "$stage/$binary"
  listing=$("$loader" --library-path "$libdirs" --list "$unpacked/$binary") \
    || die "cannot list the libraries of $binary"
  if grep -q "not found" <<<"$listing"; then
    die "$binary needs libraries no guest package provides: $(grep "not found" <<<"$listing" | tr -s '\t\n' '  ')"
  fi
  for lib in $(grep -oE '=> /[^ ]+' <<<"$listing" | cut -c4-); do
    [[ $lib == "$unpacked"/* ]] || die "$binary needs $lib, which no guest package provides (add its package)"
    dest=${lib#"$unpacked"}
    mkdir -p "$stage/$(dirname "$dest")"
    cp -L "$lib" "$stage/$dest"
  done
  mkdir -p "$stage/lib64" "$stage/lib/x86_64-linux-gnu"
  cp "$loader" "$stage/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
  ln -sfn ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/lib64/ld-linux-x86-64.so.2"
}

stage_rootfs() {
  local unpacked=$1 stage=$2 release=$3 busybox
  busybox=$unpacked/bin/busybox
  mkdir -p "$stage"/{bin,sbin,dev,proc,sys,run,tmp,mnt,etc/iscsi,var/lib/iscsi,run/lock/iscsi,lib64}
  cp "$busybox" "$stage/bin/busybox"
  for applet in $("$busybox" --list); do
    [[ -e $stage/bin/$applet ]] || ln -s busybox "$stage/bin/$applet"
  done
  for binary in "${GUEST_BINARIES[@]}"; do
    stage_binary "$binary" "$unpacked" "$stage"
  done
  ln -sf mke2fs "$stage/sbin/mkfs.ext4"
  cp "$unpacked/etc/mke2fs.conf" "$stage/etc/mke2fs.conf"
  cp "$unpacked/etc/iscsi/iscsid.conf" "$stage/etc/iscsi/iscsid.conf"
  # iscsid serves only clients whose uid has a user name (getpwuid), so root needs an entry.
  echo "root:x:0:0:root:/:/bin/sh" >"$stage/etc/passwd"
  echo "root:x:0:" >"$stage/etc/group"
  printf 'passwd: files\ngroup: files\n' >"$stage/etc/nsswitch.conf"
  for module in "${MODULES[@]}"; do
    stage_module "$module" "$release" "$unpacked" "$stage"
  done
  cp "$unpacked/lib/modules/$release/modules.builtin" "$unpacked/lib/modules/$release/modules.order" "$stage/lib/modules/$release/"
  "$busybox" depmod -b "$stage" "$release"
  install -m 0755 "$HERE/init" "$stage/init"
  install -m 0644 "$HERE/guest-lib.sh" "$stage/lib/cairn-guest.sh"
}

build() {
  local kernel_pkg=$1 unpacked=$CACHE/unpacked stage=$CACHE/stage release
  shift
  rm -rf "$unpacked" "$stage" "$OUT.new"
  mkdir -p "$unpacked" "$OUT.new"
  for deb in "$@"; do
    dpkg -x "$deb" "$unpacked"
  done
  release=${kernel_pkg#linux-image-}
  [[ -d $unpacked/lib/modules/$release ]] || die "$kernel_pkg holds no /lib/modules/$release"
  # The package leaves modules.dep to its postinst (depmod); busybox's depmod writes it without touching the host.
  "$unpacked/bin/busybox" depmod -b "$unpacked" "$release"
  extract_vmlinux "$unpacked/boot/vmlinuz-$release" "$OUT.new/vmlinux"
  stage_rootfs "$unpacked" "$stage" "$release"
  (cd "$stage" && find . | LC_ALL=C sort | "$unpacked/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$OUT.new/initramfs.cpio.gz"
  echo "$release" >"$OUT.new/kernel-release"
  rm -rf "$OUT" "$unpacked" "$stage"
  mv "$OUT.new" "$OUT"
}

main() {
  mkdir -p "$CACHE/debs"
  # One build at a time: tests and a developer may ask at once.
  exec 9>"$CACHE/lock"
  flock 9
  local kernel_pkg files stamp
  kernel_pkg=$(kernel_package)
  # shellcheck disable=SC2046 # the closure is a word list
  files=$(deb_files "$kernel_pkg" "${TOOL_PACKAGES[@]}" $(library_closure "${TOOL_PACKAGES[@]}"))
  [[ -n $files ]] || die "apt cannot resolve the guest packages (run apt-get update?)"
  stamp=$(cat <(echo "$files") "$HERE/build.sh" "$HERE/init" "$HERE/guest-lib.sh" | sha256sum | cut -d' ' -f1)
  if [[ -f $OUT/stamp && $(cat "$OUT/stamp") == "$stamp" && -f $OUT/vmlinux && -f $OUT/initramfs.cpio.gz ]]; then
    echo "$OUT"
    return 0
  fi
  # shellcheck disable=SC2086
  fetch_debs $files
  log "building vmlinux and initramfs for $kernel_pkg"
  # shellcheck disable=SC2046
  build "$kernel_pkg" $(sed "s|^|$CACHE/debs/|" <<<"$files")
  echo "$stamp" >"$OUT/stamp"
  prune_debs "$files"
  log "done: $(du -sh --apparent-size "$OUT/vmlinux" | cut -f1) vmlinux, $(du -sh --apparent-size "$OUT/initramfs.cpio.gz" | cut -f1) initramfs"
  echo "$OUT"
}

main "$@"

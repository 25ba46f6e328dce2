# Scenario: the Linux kernel NBD client (nbd.ko + nbd-client) against a Cairn export on the host.
# Connect by export name (fixed newstyle), ext4, write a pattern, unmount, mount again, verify, hash the whole
# device so the host can compare it with what it reads itself, disconnect.
# Kernel command line: cairn.port=NBD_PORT cairn.volume=NAME cairn.lines=N (pattern size: `seq 1 N`).
require CAIRN_PORT CAIRN_VOLUME CAIRN_LINES

connect() {
  modprobe -a nbd ext4 crc32c_generic || return 1
  wait_until 10 test -e /dev/nbd0 || return 1
  nbd-client 10.0.2.2 "$CAIRN_PORT" /dev/nbd0 -N "$CAIRN_VOLUME" -b 4096 || return 1
  wait_until 30 sh -c '[ "$(cat /sys/block/nbd0/size)" -gt 0 ]'
  value disk-bytes "$(( $(cat /sys/block/nbd0/size) * 512 ))"
}

make_filesystem() {
  mkfs.ext4 -q -F -b 4096 /dev/nbd0
}

hash_device() {
  blockdev --flushbufs /dev/nbd0 || return 1
  value device-sha256 "$(sha256sum /dev/nbd0 | cut -d' ' -f1)"
}

disconnect() {
  nbd-client -d /dev/nbd0 || return 1
  wait_until 30 sh -c '[ "$(cat /sys/block/nbd0/size)" = 0 ]'
}

step connect connect
step mkfs make_filesystem
step write write_pattern_file /dev/nbd0
step remount-verify verify_pattern_file /dev/nbd0
step device-hash hash_device
step disconnect disconnect

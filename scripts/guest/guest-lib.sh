# Helpers every guest scenario uses (sourced by /init as /lib/cairn-guest.sh).
# Markers are whole lines starting with "CAIRN-GUEST: " on the console: BOOTED, STEP name, VALUE key=value,
# and exactly one of PASS or FAIL step.

marker() {
  echo "CAIRN-GUEST: $*" >/dev/console
}

power_off() {
  sync
  poweroff -f
  sleep 30 # poweroff -f does not return; should it, the kernel panics when init exits and QEMU stops (-no-reboot)
  exit 1
}

pass() {
  marker PASS
  power_off
}

# Reports the failed step with the last kernel messages (what the initiator complained about), then stops.
fail() {
  echo "---- dmesg (last 40 lines) ----" >/dev/console
  dmesg | tail -40 >/dev/console
  marker FAIL "$1"
  power_off
}

# step NAME COMMAND...: runs one step of a scenario; any failure ends the run as FAIL NAME.
step() {
  local name=$1
  shift
  marker STEP "$name"
  "$@" || fail "$name"
}

# value KEY VALUE: a figure the host checks (hashes, sizes).
value() {
  marker VALUE "$1=$2"
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds or the deadline passes.
wait_until() {
  local deadline=$(( $(date +%s) + $1 ))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    usleep 200000
  done
}

# require NAME...: fails the run unless every named CAIRN_ variable came on the kernel command line.
require() {
  local variable
  for variable in "$@"; do
    eval "[ -n \"\${$variable:-}\" ]" || { echo "missing $variable on the kernel command line" >/dev/console; fail "arguments"; }
  done
}

# The data every scenario writes: a deterministic text (the decimal numbers 1..CAIRN_LINES, one per line, as `seq`
# prints them), so the host computes the same bytes and hash without being told them.
sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# write_pattern_file DEVICE: mounts the ext4 on DEVICE, writes /pattern.txt, reports its hash and unmounts.
write_pattern_file() {
  mount -t ext4 "$1" /mnt || return 1
  seq 1 "$CAIRN_LINES" >/mnt/pattern.txt && sync || { umount /mnt; return 1; }
  value written-sha256 "$(sha256_of /mnt/pattern.txt)"
  umount /mnt
}

# verify_pattern_file DEVICE: mounts again after dropping every cached page, so what is hashed is what the target
# holds and not the guest's page cache.
verify_pattern_file() {
  echo 3 >/proc/sys/vm/drop_caches
  mount -t ext4 "$1" /mnt || return 1
  value read-sha256 "$(sha256_of /mnt/pattern.txt)"
  value read-bytes "$(stat -c %s /mnt/pattern.txt)"
  umount /mnt
}

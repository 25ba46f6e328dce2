# Scenario: Linux open-iscsi against a Cairn target on the host.
# Discovery (SendTargets), login, ext4 on the LUN, write a pattern, unmount, mount again, verify, log out.
# Kernel command line: cairn.port=ISCSI_PORT cairn.volume=NAME cairn.lines=N (pattern size: `seq 1 N`).
require CAIRN_PORT CAIRN_VOLUME CAIRN_LINES
portal=10.0.2.2:$CAIRN_PORT
target=iqn.2026-11.io.cairn:$CAIRN_VOLUME

start_iscsid() {
  modprobe -a iscsi_tcp sd_mod ext4 crc32c_generic || return 1
  echo "InitiatorName=iqn.2026-11.io.cairn.test:guest" >/etc/iscsi/initiatorname.iscsi
  iscsid || return 1
  wait_until 30 pidof iscsid
}

discover() {
  iscsiadm -m discovery -t sendtargets -p "$portal" >/tmp/discovery.txt || return 1
  cat /tmp/discovery.txt
  grep -qF "$portal,1 $target" /tmp/discovery.txt # cairnd runs with --advertise-host 10.0.2.2: the portal this guest reaches
}

# Log in through the node record discovery made.
log_in() {
  iscsiadm -m node -T "$target" -p "$portal" --login || return 1
  wait_until 60 sh -c 'ls /sys/class/iscsi_session/*/device/target*/*/block 2>/dev/null | grep -q sd' || return 1
  disk=$(lun_device)
  value disk-bytes "$(( $(cat "/sys/block/${disk#/dev/}/size") * 512 ))"
}

# The SCSI disk the session's LUN 0 became (sda, as the guest has no other disk).
lun_device() {
  echo "/dev/$(ls /sys/class/iscsi_session/*/device/target*/*/block | grep sd | head -1)"
}

make_filesystem() {
  mkfs.ext4 -q -F -b 4096 "$disk"
}

log_out() {
  iscsiadm -m node -T "$target" -p "$portal" --logout || return 1
  wait_until 30 sh -c '! ls /sys/class/iscsi_session/ 2>/dev/null | grep -q session'
}

step iscsid start_iscsid
step discovery discover
step login log_in
step mkfs make_filesystem
step write write_pattern_file "$disk"
step remount-verify verify_pattern_file "$disk"
step logout log_out

# Starts and stops tgt (the Linux SCSI target daemon, Debian package `tgt`) as a private peer for comparisons:
# its own portal and management port, one target with LUN 1 = a backing file, any initiator allowed.
# Source it, then: tgt_start PORT BACKING_FILE IQN; ...; tgt_stop. Needs root (tgtd) and `tgt` installed.

TGT_PID=""
TGT_CONTROL_PORT=""

tgt_start() { # port backing-file iqn
  local port=$1 backing=$2 iqn=$3
  command -v tgtd >/dev/null || { echo "tgt: tgtd not found (apt-get install tgt)" >&2; return 1; }
  # A management port of our own, so a system tgtd or a parallel run is never touched.
  TGT_CONTROL_PORT=$(( (port % 20000) + 1000 ))  # tgtadm accepts up to 32767
  tgtd -f -C "$TGT_CONTROL_PORT" --iscsi portal=127.0.0.1:"$port" >/dev/null 2>&1 &
  TGT_PID=$!
  local adm=(tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi)
  for _ in $(seq 100); do "${adm[@]}" --mode target --op show >/dev/null 2>&1 && break; sleep 0.1; done
  "${adm[@]}" --mode target --op new --tid 1 --targetname "$iqn" &&
  "${adm[@]}" --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$backing" &&
  "${adm[@]}" --mode target --op bind --tid 1 --initiator-address ALL
}

tgt_stop() {
  [[ -n $TGT_PID ]] || return 0
  # tgtd ignores SIGTERM while it serves targets: ask it to shut down, then make sure.
  tgtadm -C "$TGT_CONTROL_PORT" --mode system --op delete --force >/dev/null 2>&1 || true
  for _ in $(seq 50); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$TGT_PID" 2>/dev/null || true
  wait "$TGT_PID" 2>/dev/null || true
  TGT_PID=""
}

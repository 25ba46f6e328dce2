#!/usr/bin/env bash
# Benchmark (issue 5): how fast a new replica is copied, next to the disk's and the loopback network's own throughput
# measured in the same run, and how many bytes a delta resync moves after an outage, next to the bytes written during
# it. Goals: rebuild at 80% of the slower of disk and network; resync at most 2x the bytes written.
#   bench/replication-rebuild.sh [--size 10G] [--runtime 30]
# --size is the volume filled and rebuilt (shrink it for a quick run); --runtime the outage: seconds of rate-limited
# writes while a replica's node is down. Three cairnd on loopback (scripts/dev-cluster.sh), all on one scratch disk.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE=10G RUNTIME=30
bench_parse_args "$@"
OUTAGE_RATE=4m     # fio's rate during the outage: 4 MiB/s of 4 KiB random writes, so the bytes written are known
bench_prepare

free_run() { # N -> a port P with P+1..P+N free on loopback
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 30000, 10)
    try:
        for p in range(base + 1, base + n + 1):
            s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
        print(base); break
    except OSError:
        continue
else:
    sys.exit("no free ports")
PY
}
export CAIRN_BIN=$PWD/$OUT CAIRN_DEV_DIR=$WORK/cluster
CAIRN_DEV_ETCD_PORT=$(( $(free_run 2) + 1 )) CAIRN_DEV_API_BASE=$(free_run 3) CAIRN_DEV_NBD_BASE=$(free_run 3) CAIRN_DEV_ISCSI_BASE=$(free_run 3)
export CAIRN_DEV_ETCD_PORT CAIRN_DEV_API_BASE CAIRN_DEV_NBD_BASE CAIRN_DEV_ISCSI_BASE
API=http://127.0.0.1:$((CAIRN_DEV_API_BASE + 1))
cleanup() { scripts/dev-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
cairn() { "$OUT/cairn/cairn" --api "$API" "$@"; }
bytes() { python3 -c 'import sys; u = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}; s = sys.argv[1].upper().rstrip("IB")
print(int(float(s.rstrip("KMGT"))) * u[s[-1] if s[-1] in "KMGT" else ""])' "$1"; }
SIZE_BYTES=$(bytes "$SIZE")
now() { date +%s.%N; }
log() { echo "bench: $*" >&2; }

fio_json() { # fio-json-file key -> figure of the first job ("write.bw_bytes", "write.io_bytes", "job_runtime")
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
value = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notices before its JSON
for part in sys.argv[2].split("."):
    value = value[part]
print(value)
PY
}

replica() { # volume node field -> the replica's field in the owner's JSON ("state", "lastRebuild.dataBytes", ...)
  cairn volume show "$1" --json | python3 -c '
import json, sys
volume, node, field = json.load(sys.stdin), sys.argv[1], sys.argv[2]
value = next((r for r in volume["replicas"] if r["node"] == node), None)
for part in field.split("."):
    value = None if value is None else value.get(part)
print("" if value is None else value)' "$2" "$3"
}

wait_in_sync() { # volume count timeout-seconds -> seconds it took
  # One process polls the API every 0.2 s: a cairn CLI and a python3 (a pyenv shim here) per poll took a third of the
  # 2-core machine's CPU away from the rebuild it timed.
  python3 - "$API/api/v1/volumes/$1" "$2" "$3" "$(now)" <<'PY' && return 0
import json, sys, time, urllib.request
url, count, timeout, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
while time.time() - start < timeout:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            replicas = json.load(response)["replicas"]
        if len(replicas) == count and all(r["state"] == "InSync" for r in replicas):
            print(f"{time.time() - start:.2f}")
            sys.exit(0)
    except (OSError, ValueError):
        pass  # the API may be briefly unavailable, as with the CLI's polls
    time.sleep(0.2)
sys.exit(1)
PY
  log "volume $1 did not reach $2 in-sync replicas within $3 s"; cairn volume show "$1" >&2; return 1
}

# --- peers: the disk and the loopback network, the same byte count as the rebuild copies --------------------------------
log "disk: sequential 1 MiB writes of $SIZE to a new file on the scratch disk, direct and buffered+fsync"
fio --name=disk --filename="$WORK/disk.img" --rw=write --bs=1M --size="$SIZE" --direct=1 --ioengine=libaio --iodepth=8 \
    --output-format=json >"$WORK/disk-direct.json"
rm -f "$WORK/disk.img"
fio --name=disk --filename="$WORK/disk.img" --rw=write --bs=1M --size="$SIZE" --end_fsync=1 --output-format=json >"$WORK/disk-buffered.json"
rm -f "$WORK/disk.img"
log "network: $SIZE over one loopback TCP connection (fio's net engine, 1 MiB writes)"
NET_PORT=$(free_port)
# The receiver asks for more than is sent and ends when the sender closes; the sender's figure is the one read.
fio --name=sink --ioengine=net --listen --protocol=tcp --port="$NET_PORT" --rw=read --bs=1M --size=1T --output-format=json >"$WORK/net-sink.json" 2>&1 &
SINK=$!
sleep 1
fio --name=send --ioengine=net --protocol=tcp --hostname=127.0.0.1 --port="$NET_PORT" --rw=write --bs=1M --size="$SIZE" --output-format=json >"$WORK/net.json"
wait "$SINK" || true
DISK_DIRECT=$(fio_json "$WORK/disk-direct.json" write.bw_bytes)
DISK_BUFFERED=$(fio_json "$WORK/disk-buffered.json" write.bw_bytes)   # end_fsync time included in fio's figure
NET=$(fio_json "$WORK/net.json" write.bw_bytes)

# --- full rebuilds: a filled one-replica volume raised to two, then three replicas --------------------------------------
scripts/dev-cluster.sh start --nodes 3 --zones 3 >/dev/null
cairn volume create rb --size "$SIZE" --replicas 1 >/dev/null
OWNER=$(cairn volume show rb --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["node"])')
EXPORT=$(cairn volume show rb --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["export"])')
log "filling $SIZE of volume rb on $OWNER ($EXPORT)"
fio --name=fill --ioengine=nbd --uri="$EXPORT" --rw=write --bs=1M --iodepth=8 --size="$SIZE" --output-format=json >"$WORK/fill.json"
FILL=$(fio_json "$WORK/fill.json" write.bw_bytes)   # Cairn's own write path on one node: what a replica's writes go through
ROWS=()
for count in 2 3; do
  before=$(cairn volume show rb --json | python3 -c 'import json, sys; print(" ".join(r["node"] for r in json.load(sys.stdin)["replicas"]))')
  log "raising rb to $count replicas"
  start=$(now)
  cairn volume replicas rb "$count" >/dev/null
  wall=$(wait_in_sync rb "$count" $((SIZE_BYTES / 10000000 + 300)))   # allows down to 10 MB/s
  added=$(cairn volume show rb --json | python3 -c 'import json, sys; print([r["node"] for r in json.load(sys.stdin)["replicas"] if r["node"] not in sys.argv[1].split()][0])' "$before")
  ROWS+=("$count $added $wall $(replica rb "$added" lastRebuild.kind) $(replica rb "$added" lastRebuild.dataBytes) $(replica rb "$added" lastRebuild.seconds)")
done

# --- delta resync: a replica's node is killed, writes go on for RUNTIME seconds, the node comes back --------------------
AWAY=$(cairn volume show rb --json | python3 -c 'import json, sys; v = json.load(sys.stdin); print([r["node"] for r in v["replicas"] if r["node"] != v["node"]][0])')
API=http://127.0.0.1:$((CAIRN_DEV_API_BASE + ${OWNER#node}))   # the owner's: node1's would be gone if it is the one killed
log "killing $AWAY (SIGKILL), then $RUNTIME s of 4 KiB random writes at $OUTAGE_RATE/s"
scripts/dev-cluster.sh kill "${AWAY#node}" >/dev/null
fio --name=outage --ioengine=nbd --uri="$EXPORT" --rw=randwrite --bs=4k --iodepth=4 --rate="$OUTAGE_RATE" --randrepeat=0 \
    --time_based --runtime="$RUNTIME" --size="$SIZE" --output-format=json >"$WORK/outage.json"
[[ $(replica rb "$AWAY" state) != InSync ]] || { log "the owner did not drop $AWAY during the outage"; exit 1; }
WRITTEN=$(fio_json "$WORK/outage.json" write.io_bytes)
log "starting $AWAY again on its data"
scripts/dev-cluster.sh start-node "${AWAY#node}" >/dev/null
RESYNC_WALL=$(wait_in_sync rb 3 600)
RESYNC="$(replica rb "$AWAY" lastRebuild.kind) $(replica rb "$AWAY" lastRebuild.dataBytes) $(replica rb "$AWAY" lastRebuild.erasedBytes) $(replica rb "$AWAY" lastRebuild.seconds)"

python3 - "$DISK_DIRECT" "$DISK_BUFFERED" "$NET" "$FILL" "$WRITTEN" "$RUNTIME" "$RESYNC_WALL" "$RESYNC" "${ROWS[@]}" <<'PY'
import sys
disk_direct, disk_buffered, net, fill, written = (float(x) for x in sys.argv[1:6])
runtime, resync_wall, resync, rows = sys.argv[6], float(sys.argv[7]), sys.argv[8].split(), sys.argv[9:]
mb = lambda b: b / 1e6
print(f"{'peer':<58}{'MB/s':>10}")
print(f"{'disk: 1 MiB sequential writes, O_DIRECT, QD 8':<58}{mb(disk_direct):>10,.0f}")
print(f"{'disk: 1 MiB sequential writes, buffered + fsync at end':<58}{mb(disk_buffered):>10,.0f}")
print(f"{'loopback TCP: one connection, 1 MiB writes':<58}{mb(net):>10,.0f}")
print(f"{'Cairn: filling the volume over NBD, 1 MiB writes, QD 8':<58}{mb(fill):>10,.0f}")
slower = min(disk_direct, net)
print(f"\n{'rebuild':<26}{'kind':>6}{'data GB':>10}{'wall s':>9}{'MB/s':>8}{'copy s':>9}{'MB/s':>8}{'/ slower':>10}{'/ buffered':>11}{'/ fill':>8}")
for row in rows:
    count, node, wall, kind, data, copy = row.split()
    rate, copy_rate = float(data) / float(wall), float(data) / float(copy)
    print(f"{'1 -> ' if count == '2' else '2 -> '}{count} replicas ({node})".ljust(26)
          + f"{kind:>6}{float(data) / 1e9:>10.2f}{float(wall):>9.1f}{mb(rate):>8,.0f}{float(copy):>9.1f}{mb(copy_rate):>8,.0f}"
          + f"{rate / slower:>10.2f}{rate / disk_buffered:>11.2f}{rate / fill:>8.2f}")
print("wall = from the replica-count change to every replica InSync (polled every 0.2 s); copy = the owner's own")
print("figure, from connecting to the new replica to admitting it. '/ slower' = wall MB/s over the slower of disk")
print("(O_DIRECT) and network: the goal is 0.80; '/ buffered' = over buffered+fsync disk writes, as the block store")
print("writes (page cache, then fdatasync); '/ fill' = over Cairn's own sequential writes on one node, measured just before.")
kind, data, erased, copy = resync[0], float(resync[1]), float(resync[2]), float(resync[3])
print(f"\ndelta resync after a {runtime} s outage with writes:")
print(f"  bytes written during the outage (4 KiB random, fio)   {written:>16,.0f}")
print(f"  bytes the resync copied ({kind})                      {data:>16,.0f}   ratio {data / written:.2f}  (goal <= 2)")
print(f"  bytes it erased (trims, no payload)                   {erased:>16,.0f}")
print(f"  resync: {copy:.1f} s on the owner, {resync_wall:.1f} s from the node's restart to InSync")
PY

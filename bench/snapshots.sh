#!/usr/bin/env bash
# Benchmark: the cost of snapshots, in one run, side by side with ratios.
#  1. 4 KiB random write IOPS (fio nbd engine, QD 32) on three filled volumes with 0, 1 and 10 snapshots (the
#     snapshots of the last one differ: random writes go between them), rows interleaved over two rounds.
#  2. Snapshot creation time (REST call, including its sync point) of a filled 1 GiB volume and of a 100 GiB
#     volume with 4 KiB written in every 16 MiB (so every page of its block map exists), median of 5.
#   bench/snapshots.sh [--runtime SECONDS] [--size SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME=10; SIZE=1G
while (($#)); do case $1 in
  --runtime) RUNTIME=$2; shift 2;; --size) SIZE=$2; shift 2;;
  *) echo "usage: $0 [--runtime SECONDS] [--size SIZE]" >&2; exit 2;; esac; done

bash scripts/setup.sh >/dev/null
WORK=$(mktemp -d /var/tmp/cairn-bench-snap.XXXXXX)
OUT=.artifacts/bench; mkdir -p "$OUT"
dotnet publish src/Cairn.Daemon -c Release -o "$OUT/cairnd" --nologo -v quiet
dotnet publish src/Cairn.Cli -c Release -o "$OUT/cairn" --nologo -v quiet

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NBD=$(free_port); API=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
"$OUT/cairnd/cairnd" --data-dir "$WORK/cairn" --nbd-listen 127.0.0.1:$NBD --iscsi-listen 127.0.0.1:0 --api-listen http://127.0.0.1:$API >"$WORK/cairnd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do grep -qs "cairnd: ready" "$WORK/cairnd.log" && break; sleep 0.1; done
cairn() { "$OUT/cairn/cairn" --api http://127.0.0.1:$API "$@" >/dev/null; }
uri() { echo "nbd://127.0.0.1:$NBD/$1"; }

for v in snap0 snap1 snap10; do
  cairn volume create $v --size "$SIZE"
  fio --name=fill --ioengine=nbd --uri="$(uri $v)" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
done
cairn snapshot create snap1 s1
for i in $(seq 10); do
  fio --name=churn --ioengine=nbd --uri="$(uri snap10)" --rw=randwrite --bs=4k --iodepth=32 --size="$SIZE" \
      --time_based --runtime=1 --randrepeat=0 >/dev/null
  cairn snapshot create snap10 s$i
done

iops() { # volume round -> IOPS
  fio --name=b --ioengine=nbd --uri="$(uri $1)" --rw=randwrite --bs=4k --iodepth=32 --size="$SIZE" --time_based \
      --runtime="$RUNTIME" --ramp_time=2 --randrepeat=0 --output-format=json >"$WORK/$1-$2.json"
  python3 -c 'import json,sys; t=open(sys.argv[1]).read(); print(json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"])' "$WORK/$1-$2.json"
}
declare -A SUM=([snap0]=0 [snap1]=0 [snap10]=0)
for round in 1 2; do
  for v in snap0 snap1 snap10; do SUM[$v]=$(python3 -c "print(${SUM[$v]} + $(iops $v $round))"); done
done

# Snapshot creation: a filled 1 GiB volume, and a 100 GiB one with a block in every 16 MiB.
cairn volume create big --size 100GiB
fio --name=sparse --ioengine=nbd --uri="$(uri big)" --rw=write:16380k --bs=4k --iodepth=8 --size=100G >/dev/null
snaptime() { # volume -> median seconds of 5 snapshot creations
  for i in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST -H 'Content-Type: application/json' \
      -d "{\"name\":\"t$i\"}" "http://127.0.0.1:$API/api/v1/volumes/$1/snapshots"
  done | sort -n | sed -n 3p
}
SMALL=$(snaptime snap0); BIG=$(snaptime big)

python3 - "${SUM[snap0]}" "${SUM[snap1]}" "${SUM[snap10]}" "$SMALL" "$BIG" "$SIZE" <<'PY'
import sys
s0, s1, s10 = (float(x) / 2 for x in sys.argv[1:4])
small, big, size = float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
print(f"{'4 KiB random write, QD 32 (' + size + ' volume)':<44}{'IOPS':>12}{'vs none':>10}")
for name, v in (("no snapshots", s0), ("1 snapshot", s1), ("10 snapshots", s10)):
    print(f"{'  ' + name:<44}{v:>12,.0f}{v / s0:>10.2f}")
print(f"{'snapshot creation (REST, incl. sync point)':<44}{'ms':>12}{'vs 1 GiB':>10}")
print(f"{'  ' + size + ' volume, filled':<44}{small * 1000:>12.2f}{1.0:>10.2f}")
print(f"{'  100 GiB volume, every map page in use':<44}{big * 1000:>12.2f}{big / small:>10.2f}")
PY

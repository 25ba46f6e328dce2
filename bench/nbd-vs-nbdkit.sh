#!/usr/bin/env bash
# Benchmark: fio's nbd engine against Cairn and against `nbdkit file` serving the same kind of backing file on the
# same disk, in one run, printed side by side with the ratio. Figures on a shared machine are noisy: read the ratio.
#   bench/nbd-vs-nbdkit.sh [--runtime SECONDS] [--size SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_parse_args "$@"
bench_prepare
CAIRN_NBD=$(free_port); CAIRN_API=$(free_port); NBDKIT_PORT=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

start_cairnd "$CAIRN_NBD" 0 "$CAIRN_API"
PIDS+=("$CAIRND_PID")
"$OUT/cairn/cairn" --api http://127.0.0.1:$CAIRN_API volume create bench --size "$SIZE" >/dev/null

truncate -s "$SIZE" "$WORK/nbdkit.img"
nbdkit --foreground --exit-with-parent -p $NBDKIT_PORT file "$WORK/nbdkit.img" &
PIDS+=($!)

declare -A URI=([cairn]="nbd://127.0.0.1:$CAIRN_NBD/bench" [nbdkit]="nbd://127.0.0.1:$NBDKIT_PORT/")
for t in cairn nbdkit; do  # wait until each server answers a real NBD client
  for _ in $(seq 300); do nbdinfo "${URI[$t]}" >/dev/null 2>&1 && break; sleep 0.1; done
  nbdinfo "${URI[$t]}" >/dev/null || { echo "bench: $t does not answer at ${URI[$t]}" >&2; exit 1; }
done

# Fill both targets first so reads hit real data, not holes.
for t in cairn nbdkit; do
  fio --name=fill --ioengine=nbd --uri="${URI[$t]}" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
done

run() { # target rw bs iodepth [tag] -> json file
  local out="$WORK/$1-$2-$3-$4${5:-}.json"
  fio --name=b --ioengine=nbd --uri="${URI[$1]}" --rw=$2 --bs=$3 --iodepth=$4 --size="$SIZE" \
      --time_based --runtime="$RUNTIME" --ramp_time=2 --randrepeat=0 --output-format=json >"$out" \
    || { echo "bench: fio failed against $1 ($2 $3 QD$4):" >&2; cat "$out" >&2; exit 1; }
}

# Sequential rows run first, on the freshly filled layout; then the random rows. A copy-on-write store scatters
# randomly overwritten blocks, so one extra row reads sequentially again after the random writes and shows that cost.
ROWS=("randread 4k 32" "randwrite 4k 32" "randread 4k 1" "randwrite 4k 1" "read 1M 8" "write 1M 8")
for row in "read 1M 8" "write 1M 8" "randread 4k 32" "randwrite 4k 32" "randread 4k 1" "randwrite 4k 1"; do
  for t in cairn nbdkit; do run $t $row; done
done
for t in cairn nbdkit; do run $t read 1M 8 -fragmented; done
ROWS+=("read 1M 8 -fragmented")

python3 - "$WORK" "${ROWS[@]}" <<'PY'
import json, sys
work, rows = sys.argv[1], sys.argv[2:]
def load(t, row):
    rw, bs, qd, *tag = row.split()
    text = open(f"{work}/{t}-{rw}-{bs}-{qd}{''.join(tag)}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notices before its JSON
    d = j["read"] if "read" in rw else j["write"]
    return d, int(qd), bs
print(f"{'workload':<24}{'metric':<14}{'cairn':>14}{'nbdkit':>14}{'ratio':>8}")
for row in rows:
    rw, bs, qd, *tag = row.split()
    c, qd, bs = load("cairn", row); n, _, _ = load("nbdkit", row)
    name = f"{bs} {rw} QD{qd}" + (" after rand" if tag else "")
    if bs == "1M":
        a, b = c["bw_bytes"] / 1e9, n["bw_bytes"] / 1e9
        print(f"{name:<24}{'GB/s':<14}{a:>14.2f}{b:>14.2f}{a / b:>8.2f}")
    else:
        print(f"{name:<24}{'IOPS':<14}{c['iops']:>14,.0f}{n['iops']:>14,.0f}{c['iops'] / n['iops']:>8.2f}")
    if qd == 1:
        for label, key in (("mean us", None), ("p99 us", "99.000000")):
            a = c["clat_ns"]["mean"] / 1e3 if key is None else c["clat_ns"]["percentile"][key] / 1e3
            b = n["clat_ns"]["mean"] / 1e3 if key is None else n["clat_ns"]["percentile"][key] / 1e3
            # For latency lower is better: the ratio is nbdkit/cairn so that > 1 still means Cairn is ahead.
            print(f"{'':<24}{label:<14}{a:>14.1f}{b:>14.1f}{b / a:>8.2f}")
print("\nratio = cairn/nbdkit for IOPS and GB/s, nbdkit/cairn for latency (above 1 = Cairn ahead)")
PY

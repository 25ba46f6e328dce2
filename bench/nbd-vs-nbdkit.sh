#!/usr/bin/env bash
# Benchmark: fio's nbd engine against Cairn and against `nbdkit file` serving the same kind of backing file on the
# same disk, in one run, printed side by side with the ratio. Figures on a shared machine are noisy: read the ratio.
# --repeat N runs every row N times, alternating which server goes first, and prints medians with the spread of the
# per-pair ratios: a neighbour's job that starts or stops mid-row moves one pair, not the median.
# --seq runs only the 1 MiB rows (and the 4 KiB QD 32 random writes that scatter blocks before the "after rand" row),
# for work on the sequential paths.
#   bench/nbd-vs-nbdkit.sh [--runtime SECONDS] [--size SIZE] [--repeat N] [--seq]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
REPEAT=1; SEQ_ONLY=0; ARGS=()
while (($#)); do case $1 in
  --repeat) REPEAT=$2; shift 2;;
  --seq) SEQ_ONLY=1; shift;;
  *) ARGS+=("$1"); shift;; esac; done
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [--runtime SECONDS] [--size SIZE] [--repeat N] [--seq]" >&2; exit 2; }
bench_parse_args "${ARGS[@]+"${ARGS[@]}"}"
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

run() { # target rw bs iodepth tag rep -> json file
  local out="$WORK/$1-$2-$3-$4$5-$6.json"
  fio --name=b --ioengine=nbd --uri="${URI[$1]}" --rw=$2 --bs=$3 --iodepth=$4 --size="$SIZE" \
      --time_based --runtime="$RUNTIME" --ramp_time=2 --randrepeat=0 --output-format=json >"$out" \
    || { echo "bench: fio failed against $1 ($2 $3 QD$4):" >&2; cat "$out" >&2; exit 1; }
}

# Sequential rows run first, on the freshly filled layout; then the random rows. A copy-on-write store scatters
# randomly overwritten blocks, so one extra row reads sequentially again after the random writes and shows that cost.
ROWS=("randread 4k 32" "randwrite 4k 32" "randread 4k 1" "randwrite 4k 1" "read 1M 8" "write 1M 8")
row_pairs() { # rw bs iodepth tag: REPEAT pairs, alternating which target goes first
  for rep in $(seq "$REPEAT"); do
    if ((rep % 2)); then run cairn "$@" "$rep"; run nbdkit "$@" "$rep"; else run nbdkit "$@" "$rep"; run cairn "$@" "$rep"; fi
  done
}
ORDER=("read 1M 8" "write 1M 8" "randread 4k 32" "randwrite 4k 32" "randread 4k 1" "randwrite 4k 1")
if ((SEQ_ONLY)); then ROWS=("read 1M 8" "write 1M 8" "randwrite 4k 32"); ORDER=("${ROWS[@]}"); fi
for row in "${ORDER[@]}"; do
  row_pairs $row ""
done
row_pairs read 1M 8 -fragmented
ROWS+=("read 1M 8 -fragmented")

python3 - "$WORK" "$REPEAT" "${ROWS[@]}" <<'PY'
import json, statistics, sys
work, repeat, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(t, row, rep):
    rw, bs, qd, *tag = row.split()
    text = open(f"{work}/{t}-{rw}-{bs}-{qd}{''.join(tag)}-{rep}.json").read()
    j = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notices before its JSON
    return j["read"] if "read" in rw else j["write"]
def line(name, metric, pairs, fmt, latency=False):
    # pairs: (cairn, nbdkit) per repetition. For latency lower is better: the ratio is nbdkit/cairn so > 1 = Cairn ahead.
    ratios = [(n / c) if latency else (c / n) for c, n in pairs]
    med = lambda xs: statistics.median(xs)
    spread = f"  {min(ratios):.2f}-{max(ratios):.2f}" if len(pairs) > 1 else ""
    print(f"{name:<24}{metric:<14}{fmt(med([c for c, _ in pairs])):>14}{fmt(med([n for _, n in pairs])):>14}{med(ratios):>8.2f}{spread}")
print(f"{'workload':<24}{'metric':<14}{'cairn':>14}{'nbdkit':>14}{'ratio':>8}" + ("  spread" if repeat > 1 else ""))
for row in rows:
    rw, bs, qd, *tag = row.split()
    runs = [(load("cairn", row, r), load("nbdkit", row, r)) for r in range(1, repeat + 1)]
    name = f"{bs} {rw} QD{qd}" + (" after rand" if tag else "")
    if bs == "1M":
        line(name, "GB/s", [(c["bw_bytes"] / 1e9, n["bw_bytes"] / 1e9) for c, n in runs], lambda v: f"{v:.2f}")
    else:
        line(name, "IOPS", [(c["iops"], n["iops"]) for c, n in runs], lambda v: f"{v:,.0f}")
    if qd == "1":
        line("", "mean us", [(c["clat_ns"]["mean"] / 1e3, n["clat_ns"]["mean"] / 1e3) for c, n in runs], lambda v: f"{v:.1f}", True)
        p99 = lambda d: d["clat_ns"]["percentile"]["99.000000"] / 1e3
        line("", "p99 us", [(p99(c), p99(n)) for c, n in runs], lambda v: f"{v:.1f}", True)
print("\nratio = cairn/nbdkit for IOPS and GB/s, nbdkit/cairn for latency (above 1 = Cairn ahead)")
if repeat > 1:
    print(f"medians of {repeat} alternating runs per row; spread = lowest-highest ratio of a pair")
PY

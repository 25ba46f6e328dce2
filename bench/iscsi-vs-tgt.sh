#!/usr/bin/env bash
# Benchmark: libiscsi's iscsi-perf (reads: random 4 KiB and sequential 1 MiB) and qemu-img bench over iscsi:// (writes,
# which iscsi-perf does not do: 4 KiB and 1 MiB, through R2T and immediate data) against Cairn's iSCSI target and against
# tgt (the Linux SCSI target daemon, Debian package `tgt`) serving a file of the same size with the same bytes on the
# same disk, in one run, printed side by side with the ratio. Shared machine: read the ratio, not the absolute figures.
#   bench/iscsi-vs-tgt.sh [--runtime SECONDS] [--size SIZE]    (needs root for tgtd)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source scripts/lib/tgt.sh
bench_parse_args "$@"
command -v tgtd >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tgt >/dev/null; }
bench_prepare
CAIRN_ISCSI=$(free_port); CAIRN_API=$(free_port); TGT_PORT=$(free_port)
CAIRND_PID=""
cleanup() { if [[ -n $CAIRND_PID ]]; then kill "$CAIRND_PID" 2>/dev/null || true; fi; tgt_stop; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

start_cairnd 0 "$CAIRN_ISCSI" "$CAIRN_API"
"$OUT/cairn/cairn" --api http://127.0.0.1:$CAIRN_API volume create bench --size "$SIZE" >/dev/null

# The same bytes behind both targets: random data in tgt's backing file, copied onto the Cairn volume over iSCSI.
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$WORK/tgt.img"
tgt_start "$TGT_PORT" "$WORK/tgt.img" iqn.2026-11.io.cairn.peer:tgt
declare -A URL=([cairn]="iscsi://127.0.0.1:$CAIRN_ISCSI/iqn.2026-11.io.cairn:bench/0" [tgt]="iscsi://127.0.0.1:$TGT_PORT/iqn.2026-11.io.cairn.peer:tgt/1")
qemu-img convert -n -f raw -O raw "$WORK/tgt.img" "${URL[cairn]}"

run() { # target name iscsi-perf-args... -> "IOPS MB/s"
  local target=$1 name=$2; shift 2
  local log="$WORK/$target-$name.log"
  timeout $((RUNTIME + 30)) iscsi-perf -t "$RUNTIME" "$@" "${URL[$target]}" >"$log" 2>&1 \
    || { echo "bench: iscsi-perf failed against $target ($name):" >&2; tail -5 "$log" >&2; exit 1; }
  # The last progress line: "iops average N (M MB/s)".
  tr '\r' '\n' <"$log" | grep -o 'iops average [0-9]* ([0-9]* MB/s)' | tail -1 | sed -E 's/iops average ([0-9]+) \(([0-9]+) MB\/s\)/\1 \2/'
}

write_run() { # target name count size depth -> "IOPS MB/s"
  local target=$1 name=$2 count=$3 size=$4 depth=$5
  local log="$WORK/$target-$name.log"
  qemu-img bench -w -f raw -t none -c "$count" -s "$size" -d "$depth" "${URL[$target]}" >"$log" 2>&1 \
    || { echo "bench: qemu-img bench failed against $target ($name):" >&2; tail -5 "$log" >&2; exit 1; }
  local seconds; seconds=$(grep -o 'Run completed in [0-9.]*' "$log" | awk '{print $4}')
  python3 -c "c, s, b = $count, $seconds, $(numfmt --from=iec "$size"); print(round(c / s), round(c * b / s / 1e6))"
}

ROWS=("randread-4k-qd32:-r -m 32 -b 8" "randread-4k-qd1:-r -m 1 -b 8" "seqread-1m-qd8:-m 8 -b 2048")
printf '%-22s%-8s%14s%14s%8s\n' workload metric cairn tgt ratio
for row in "${ROWS[@]}"; do
  name=${row%%:*}; args=${row#*:}
  # shellcheck disable=SC2086
  read -r c_iops c_mbs < <(run cairn "$name" $args)
  # shellcheck disable=SC2086
  read -r t_iops t_mbs < <(run tgt "$name" $args)
  if [[ $name == seq* ]]; then
    printf '%-22s%-8s%14s%14s%8s\n' "$name" "MB/s" "$c_mbs" "$t_mbs" "$(python3 -c "print(f'{$c_mbs/$t_mbs:.2f}')")"
  else
    printf '%-22s%-8s%14s%14s%8s\n' "$name" "IOPS" "$c_iops" "$t_iops" "$(python3 -c "print(f'{$c_iops/$t_iops:.2f}')")"
  fi
done
WRITES=("write-4k-qd32 $((RUNTIME * 10000)) 4K 32 IOPS" "write-1m-qd8 $(( $(numfmt --from=iec "$SIZE") >> 20 )) 1M 8 MB/s")
for row in "${WRITES[@]}"; do
  read -r name count size depth metric <<<"$row"
  read -r c_iops c_mbs < <(write_run cairn "$name" "$count" "$size" "$depth")
  read -r t_iops t_mbs < <(write_run tgt "$name" "$count" "$size" "$depth")
  if [[ $metric == IOPS ]]; then c=$c_iops; t=$t_iops; else c=$c_mbs; t=$t_mbs; fi
  printf '%-22s%-8s%14s%14s%8s\n' "$name" "$metric" "$c" "$t" "$(python3 -c "print(f'{$c/$t:.2f}')")"
done

#!/usr/bin/env bash
# Benchmark: synchronous replication's cost and failover time (issue 5), in one run on a real etcd and three cairnd
# nodes in three zones on loopback (one machine, one disk: every copy shares the CPU and the disk).
#  1. fio's nbd engine, 4 KiB random writes at QD 32 (IOPS) and QD 1 (mean and p99 latency), on a volume with one
#     replica and on one with three (--spread zone), rows alternated over two rounds, printed side by side with the
#     ratio 3 replicas / 1 replica and Ceph RBD 16.2's figures with 3 replicas on the same kind of machine.
#  2. Failover: fio writes to the 3-replica volume; its owner's cairnd gets SIGKILL; a client asks a surviving node's
#     API (GET /api/v1/volumes/NAME) for the volume's owner and export, and retries a 4 KiB write (nbdcopy) there
#     until one succeeds. Printed: the time from the kill to that write's completion, and the measurement's resolution.
# Figures on a shared machine are noisy: read the ratios.
# --node-cpu F gives each cairnd, and fio (the client), its own CPU quota of F cores (a cgroup): the machine then
# stands in for separate machines of equal CPU, as replicas on real nodes would have, instead of three copies
# sharing two cores. Keep 4 x F within the machine's cores (0.5 on two).
# --ramp S: seconds of each fio run not measured (default 2): the .NET JIT's tiered recompilation of the hot paths
# runs in the background for a while after start, longer under a CPU quota.
#   bench/replication.sh [--runtime SECONDS] [--size SIZE] [--lease-ttl SECONDS] [--node-cpu F] [--ramp S]   (lease: cairnd's default, 4 s)
#   BENCH_KEEP=1 keeps the nodes' and etcd's logs (the scratch directory) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
trap 'echo "bench: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
LEASE_FLAGS=(); args=(); RAMP=2
while (($#)); do case $1 in
  --lease-ttl) LEASE_FLAGS=(--lease-ttl "$2"); shift 2;; --node-cpu) export BENCH_NODE_CPU=$2; shift 2;;
  --ramp) RAMP=$2; shift 2;; *) args+=("$1"); shift;; esac; done
bench_parse_args "${args[@]}"
bench_prepare
cleanup() {
  for p in "${NODE_PID[@]}" ${ETCD_PID:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  remove_cpu_groups
  if [[ ${BENCH_KEEP:-} == 1 ]]; then echo "bench: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_etcd
for i in 1 2 3; do start_cluster_node n$i zone$i "${LEASE_FLAGS[@]}"; done
for i in 1 2 3; do wait_cluster_node n$i; done
api() { echo "${NODE_API[n1]}"; }
cairn() { "$OUT/cairn/cairn" --api "$(api)" "$@"; }
show() { curl -sf "$1/api/v1/volumes/$2"; }                      # api-url volume -> the volume's JSON
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# Three replicas spread by zone need all three nodes Up in the cluster store: retry until placement succeeds.
for _ in $(seq 100); do cairn volume create r3 --size "$SIZE" --replicas 3 --spread zone >/dev/null 2>&1 && break; sleep 0.3; done
OWNER=$(show "$(api)" r3 | field node)
cairn volume create r1 --size "$SIZE" --replicas 1 --node "$OWNER" >/dev/null   # the same node serves both
declare -A URI=([r1]=$(show "$(api)" r1 | field export) [r3]=$(show "$(api)" r3 | field export))
for v in r1 r3; do  # wait until each export answers a real NBD client
  for _ in $(seq 300); do nbdinfo "${URI[$v]}" >/dev/null 2>&1 && break; sleep 0.1; done
  nbdinfo "${URI[$v]}" >/dev/null || { echo "bench: $v does not answer at ${URI[$v]}" >&2; exit 1; }
done
show "$(api)" r3 | python3 -c '
import json, sys
v = json.load(sys.stdin); states = [r["state"] for r in v["replicas"]]
assert states == ["InSync"] * 3, f"bench: r3 replicas are {states}, expected 3 InSync"
print("bench: r3 owned by", v["node"], "at epoch", v["epoch"], "with replicas on", ", ".join(r["node"] for r in v["replicas"]))'

# Fill both first, so random writes overwrite allocated blocks on every copy alike.
for v in r1 r3; do
  fio --name=fill --ioengine=nbd --uri="${URI[$v]}" --rw=write --bs=1M --iodepth=8 --size="$SIZE" >/dev/null
done

cpu_ticks() { # CPU time (user + system, clock ticks) of each cairnd so far: "n1 n2 n3"
  local n out=(); for n in n1 n2 n3; do out+=("$(awk '{print $14 + $15}' /proc/"${NODE_PID[$n]}"/stat)"); done; echo "${out[*]}"
}
run() { # volume iodepth round -> json file, and the nodes' CPU ticks during the run
  local out="$WORK/$1-qd$2-$3.json" before start; before=$(cpu_ticks); start=$(date +%s%N)
  cpu_wrapper client
  "${CPU_WRAP[@]}" fio --name=b --ioengine=nbd --uri="${URI[$1]}" --rw=randwrite --bs=4k --iodepth=$2 --size="$SIZE" \
      --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --randrepeat=0 --output-format=json >"$out" \
    || { echo "bench: fio failed against $1 (QD$2):" >&2; cat "$out" >&2; exit 1; }
  echo "$before | $(cpu_ticks) | $(($(date +%s%N) - start))" >"$WORK/$1-qd$2-$3.cpu"   # ticks per node before | after | ns
}
for qd in 32 1; do run r1 $qd 1; run r3 $qd 1; done
for qd in 32 1; do run r3 $qd 2; run r1 $qd 2; done   # the other order: drift on the machine hits both alike

# Failover: a continuous writer, then SIGKILL of the owner; the client finds the new owner through a survivor's API.
for n in n1 n2 n3; do if [[ $n != "$OWNER" ]]; then SURVIVOR=$n; break; fi; done
head -c 4096 /dev/urandom >"$WORK/block.bin"
fio --name=writer --ioengine=nbd --uri="${URI[r3]}" --rw=randwrite --bs=4k --iodepth=4 --size="$SIZE" \
    --time_based --runtime=600 >/dev/null 2>&1 &
WRITER=$!
sleep 3
LEADER=$(curl -sf "${NODE_API[$SURVIVOR]}/api/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader"))')
python3 - "${NODE_PID[$OWNER]}" "$OWNER" "${NODE_API[$SURVIVOR]}" "$WORK/block.bin" >"$WORK/failover.txt" 2>"$WORK/failover-attempts.txt" <<'PY'
# A new attempt (look the volume up, then write 4 KiB to its export) starts every POLL_S whether or not earlier ones
# have returned, so one slow lookup during the promotion cannot hide the moment IO comes back.
import json, os, signal, subprocess, sys, threading, time, urllib.request
pid, owner, api, block = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
POLL_S = 0.02
attempts, lock, done = [], threading.Lock(), threading.Event()
def attempt(start):
    node, ok, looked_up = None, False, None
    try:
        with urllib.request.urlopen(f"{api}/api/v1/volumes/r3", timeout=10) as r:
            v = json.load(r)
        node, looked_up = v["node"], time.monotonic() - killed
        if node != owner:
            ok = subprocess.run(["nbdcopy", "-C", "1", block, v["export"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except Exception:
        pass
    with lock:
        attempts.append((start - killed, time.monotonic() - killed, ok, node, looked_up))
    if ok:
        done.set()
killed = time.monotonic()
os.kill(pid, signal.SIGKILL)
while not done.is_set() and time.monotonic() - killed < 120:
    threading.Thread(target=attempt, args=(time.monotonic(),), daemon=True).start()
    time.sleep(POLL_S)
with lock:
    ok = [a for a in attempts if a[2]]
    if not ok:
        print("timeout"); sys.exit(0)
    first = min(ok, key=lambda a: a[1])
    failed_before = max((a[0] for a in attempts if not a[2] and a[0] < first[1]), default=0.0)
    moved = min(a[4] for a in attempts if a[3] not in (None, owner))
    print(f"{first[1]:.3f} {moved:.3f} {failed_before:.3f} {first[3]} {len(attempts)} {first[0]:.3f}")
    for a in sorted(attempts):  # start, end, write ok, owner named, lookup answered (s after the kill): kept with BENCH_KEEP=1
        print(*a, file=sys.stderr)
PY
kill "$WRITER" 2>/dev/null || true
wait "$WRITER" 2>/dev/null || true
NODE_PID[$OWNER]=""   # already dead

python3 - "$WORK" "$OWNER" "$LEADER" "${LEASE_FLAGS[1]:-4 (default)}" "$SIZE" "$(cat "$WORK/failover.txt")" "$(getconf CLK_TCK)" \
  "${BENCH_NODE_CPU:-}" <<'PY'
import json, sys
work, owner, leader, lease, size, failover, tick, node_cpu = sys.argv[1:9]
def load(v, qd, rnd):
    text = open(f"{work}/{v}-qd{qd}-{rnd}.json").read()
    return json.loads(text[text.index("{"):])["jobs"][0]["write"]  # fio may print notices before its JSON
def mean(v, qd, f):
    return sum(f(load(v, qd, r)) for r in (1, 2)) / 2
iops = lambda d: d["iops"]
lat = lambda d: d["clat_ns"]["mean"] / 1e3
p99 = lambda d: d["clat_ns"]["percentile"]["99.000000"] / 1e3
def cpu_per_write(v, qd, node=None):  # CPU seconds per second of the fio run over the writes per second: all cairnd, or one
    per_round = []
    for r in (1, 2):
        before, after, nanoseconds = open(f"{work}/{v}-qd{qd}-{r}.cpu").read().split("|")
        ticks = [int(b) - int(a) for a, b in zip(before.split(), after.split())]
        used = ticks[int(node[1:]) - 1] if node else sum(ticks)
        per_round.append(used / int(tick) / (int(nanoseconds) / 1e9) / load(v, qd, r)["iops"] * 1e6)
    return sum(per_round) / 2
CEPH_IOPS, CEPH_LAT_US = 2600, 1100
rows = [("4 KiB randwrite QD 32", "IOPS", 32, iops, f"{CEPH_IOPS:,}", lambda x: f"{x / CEPH_IOPS:.1f}x"),
        ("4 KiB randwrite QD 1", "IOPS", 1, iops, "", None),
        ("", "mean us", 1, lat, f"{CEPH_LAT_US:,}", lambda x: f"{CEPH_LAT_US / x:.1f}x"),
        ("", "p99 us", 1, p99, "", None)]
if node_cpu:
    print(f"\nCPU quota: {node_cpu} core for each cairnd and for fio (as if each ran on its own machine of that size)")
print(f"\n{size} volumes, mean of 2 rounds; ratio = 3 replicas / 1 replica (goal for QD 32 IOPS: 0.70 or more)")
print(f"{'workload':<24}{'metric':<10}{'1 replica':>12}{'3 replicas':>12}{'ratio':>8}{'Ceph RBD 3x':>13}{'Cairn vs Ceph':>15}")
for name, metric, qd, f, ceph, vs in rows:
    a, b = mean("r1", qd, f), mean("r3", qd, f)
    fmt = (lambda x: f"{x:,.0f}") if metric == "IOPS" else (lambda x: f"{x:,.1f}")
    print(f"{name:<24}{metric:<10}{fmt(a):>12}{fmt(b):>12}{b / a:>8.2f}{ceph:>13}{vs(b) if vs else '':>15}")
for qd in (32, 1):
    a, b = cpu_per_write("r1", qd), cpu_per_write("r3", qd)
    print(f"{'CPU per write, QD ' + str(qd):<24}{'us':<10}{a:>12,.1f}{b:>12,.1f}{b / a:>8.2f}")
split = ", ".join(f"{n}{' (owner)' if n == owner else ''} {cpu_per_write('r3', 32, n):.1f}" for n in ("n1", "n2", "n3"))
print(f"CPU per write by node, 3 replicas, QD 32 (us): {split}; 1 replica, all on {owner}")
print("Ceph RBD 16.2, 3 replicas, same kind of machine (issue 5): ~2,600 IOPS at QD 32, 1.1 ms at QD 1; goal: 10x the IOPS")
print("CPU per write: user + system time of all three cairnd during the fio run, per write" +
      ("" if node_cpu else "; every copy shares this machine's cores"))
if failover == "timeout":
    print(f"\nfailover: no write succeeded within 120 s of SIGKILL of the owner {owner}")
    sys.exit(1)
total, moved, last_failed, new_owner, attempts, first_start = failover.split()
print(f"\nfailover (lease TTL {lease} s; controller was {leader}): SIGKILL of owner {owner} -> new owner {new_owner}")
print(f"  the API first named the new owner  {float(moved):.2f} s after the kill")
print(f"  first 4 KiB write acknowledged     {float(total):.2f} s after the kill (goal: under 5 s), by an attempt started at {float(first_start):.2f} s")
print(f"  resolution: an attempt (lookup + write) started every 20 ms ({attempts} returned); the last to fail started at {float(last_failed):.2f} s")
PY

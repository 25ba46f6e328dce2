# What the benchmarks share: options, publishing cairnd and cairn, free ports, starting cairnd on a scratch directory.
# Source it from the repository root after `set -euo pipefail`; it sets RUNTIME, SIZE, WORK and OUT.

RUNTIME=10; SIZE=1G
bench_parse_args() { # "$@" of the benchmark
  while (($#)); do case $1 in
    --runtime) RUNTIME=$2; shift 2;; --size) SIZE=$2; shift 2;;
    *) echo "usage: $0 [--runtime SECONDS] [--size SIZE]" >&2; exit 2;; esac; done
}

bench_prepare() { # installs what is missing, publishes cairnd and cairn, makes the scratch directory on /var/tmp
  bash scripts/setup.sh >/dev/null
  command -v python3 >/dev/null || { apt-get install -y -qq python3-minimal >/dev/null; }
  WORK=$(mktemp -d /var/tmp/cairn-bench.XXXXXX)   # the same disk for Cairn and its peer
  OUT=.artifacts/bench; mkdir -p "$OUT"
  dotnet publish src/Cairn.Daemon -c Release -o "$OUT/cairnd" --nologo -v quiet
  dotnet publish src/Cairn.Cli -c Release -o "$OUT/cairn" --nologo -v quiet
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_cairnd() { # nbd-port iscsi-port api-port -> CAIRND_PID; returns once cairnd is ready
  "$OUT/cairnd/cairnd" --data-dir "$WORK/cairn" --nbd-listen 127.0.0.1:"$1" --iscsi-listen 127.0.0.1:"$2" --api-listen http://127.0.0.1:"$3" >"$WORK/cairnd.log" 2>&1 &
  CAIRND_PID=$!
  for _ in $(seq 300); do grep -q "cairnd: ready" "$WORK/cairnd.log" && return 0; sleep 0.1; done
  echo "bench: cairnd did not start; see $WORK/cairnd.log" >&2
  return 1
}

# A cluster on loopback for the replication benchmarks: a real etcd and cairnd nodes with their own data directories
# under $WORK, every listener on a free port (read back from cairnd's announcements). scripts/dev-cluster.sh is the
# interactive equivalent; it uses fixed ports, which parallel runs on a shared machine would fight over.
declare -gA NODE_PID=() NODE_API=()

start_etcd() { # -> ETCD (the --cluster spec) and ETCD_PID; returns once etcd serves requests
  local client peer; client=$(free_port); peer=$(free_port)
  etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$client" \
    --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "bench=http://127.0.0.1:$peer" >"$WORK/etcd.log" 2>&1 &
  ETCD_PID=$!; ETCD="etcd://127.0.0.1:$client"
  for _ in $(seq 300); do
    curl -sf -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$client/v3/kv/range" -o /dev/null && return 0; sleep 0.1
  done
  echo "bench: etcd did not start; see $WORK/etcd.log" >&2
  return 1
}

# With BENCH_NODE_CPU=F (a fraction of one core, e.g. 0.6) every node, and every command run through cpu_wrapper's prefix,
# gets its own CFS quota of F cores: one machine then stands in for several machines of equal CPU, instead of all
# copies sharing its cores. cgroup v1's cpu controller (this machine) or v2's cpu.max.
cpu_group() { # name -> the cgroup's directory, created with the quota BENCH_NODE_CPU
  local v1=/sys/fs/cgroup/cpu v2=/sys/fs/cgroup/unified dir period=100000 quota
  quota=$(python3 -c "print(int(float('$BENCH_NODE_CPU') * $period))")
  if [[ -w $v1/cgroup.procs ]]; then
    dir=$v1/cairn-bench-$$-$1; mkdir -p "$dir"; echo $period >"$dir/cpu.cfs_period_us"; echo "$quota" >"$dir/cpu.cfs_quota_us"
  elif [[ -w $v2/cgroup.procs ]] && grep -qw cpu $v2/cgroup.controllers 2>/dev/null; then
    echo +cpu >"$v2/cgroup.subtree_control" 2>/dev/null || true
    dir=$v2/cairn-bench-$$-$1; mkdir -p "$dir"; echo "$quota $period" >"$dir/cpu.max"
  else
    echo "bench: BENCH_NODE_CPU needs a writable cgroup cpu controller" >&2; return 1
  fi
  echo "$dir"
}
cpu_wrapper() { # name -> CPU_WRAP: a command prefix that runs a command in the named CPU group (empty without BENCH_NODE_CPU)
  CPU_WRAP=()
  [[ -z ${BENCH_NODE_CPU:-} ]] && return 0
  local dir; dir=$(cpu_group "$1") || return 1
  # Join the group, then exec (so $! is the command's pid): .NET reads its CPU quota at start-up.
  CPU_WRAP=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir")
}
remove_cpu_groups() { # after their processes ended ($$ is the benchmark's shell, also in subshells)
  local d; for d in /sys/fs/cgroup/cpu/cairn-bench-$$-* /sys/fs/cgroup/unified/cairn-bench-$$-*; do [[ -d $d ]] && rmdir "$d" 2>/dev/null; done; true
}

start_cluster_node() { # name zone [cairnd flags...] -> NODE_PID[name]; wait_cluster_node sets NODE_API[name]
  local name=$1 zone=$2; shift 2
  cpu_wrapper "$name"
  "${CPU_WRAP[@]}" "$OUT/cairnd/cairnd" --data-dir "$WORK/$name" --cluster "$ETCD" --node "$name" --zone "$zone" --nbd-listen 127.0.0.1:0 \
    --iscsi-listen 127.0.0.1:0 --api-listen http://127.0.0.1:0 "$@" >"$WORK/$name.log" 2>&1 &
  NODE_PID[$name]=$!
}

wait_cluster_node() { # name: returns once it is ready, with NODE_API[name] set
  for _ in $(seq 600); do
    if grep -q "cairnd: ready" "$WORK/$1.log"; then
      NODE_API[$1]=$(sed -n 's/^cairnd: api listening on //p' "$WORK/$1.log" | tail -1)
      return 0
    fi
    sleep 0.1
  done
  echo "bench: node $1 did not start; see $WORK/$1.log" >&2
  return 1
}

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

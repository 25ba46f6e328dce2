#!/usr/bin/env bash
# A local development cluster in one command: a real etcd plus N cairnd nodes on loopback, spread over zones,
# each with its own data directory, ports and log under ./cairn-dev-cluster.
#   scripts/dev-cluster.sh start [--nodes N] [--zones K]   start (or restart) the cluster and print its endpoints
#   scripts/dev-cluster.sh status                         show what runs
#   scripts/dev-cluster.sh stop [--clean]                 stop every process (and delete the data with --clean)
#   scripts/dev-cluster.sh kill N                         SIGKILL node N (a crash: its data stays)
#   scripts/dev-cluster.sh start-node N                   start node N again on its data, in its zone; waits until ready
# Set CAIRN_BIN to a directory holding cairnd/ and cairn/ builds to skip building. CAIRN_DEV_DIR, CAIRN_DEV_ETCD_PORT
# and CAIRN_DEV_{API,NBD,ISCSI}_BASE move the cluster (benchmarks run one beside a developer's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${CAIRN_DEV_DIR:-$ROOT/cairn-dev-cluster}
BIN=${CAIRN_BIN:-$ROOT/.artifacts/bin}
ETCD_PORT=${CAIRN_DEV_ETCD_PORT:-12379}
# Node i listens on BASE + i (the single-node demo keeps BASE itself).
API_BASE=${CAIRN_DEV_API_BASE:-9410} NBD_BASE=${CAIRN_DEV_NBD_BASE:-10809} ISCSI_BASE=${CAIRN_DEV_ISCSI_BASE:-3260}
NODES=3 ZONES=3 CLEAN=0

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
command=${1:-}; [[ -n $command ]] || usage; shift
NODE_INDEX=
if [[ $command == kill || $command == start-node ]]; then
  NODE_INDEX=${1:-}; shift || true
  [[ $NODE_INDEX =~ ^[1-9][0-9]?$ && -d ${DIR:-}/node$NODE_INDEX ]] || { echo "dev-cluster: $command needs the index of an existing node" >&2; exit 2; }
fi
while [[ $# -gt 0 ]]; do
  case $1 in
    --nodes) NODES=$2; shift 2 ;;
    --zones) ZONES=$2; shift 2 ;;
    --clean) CLEAN=1; shift ;;
    *) echo "dev-cluster: unknown option $1" >&2; usage ;;
  esac
done
[[ $NODES =~ ^[1-9][0-9]?$ ]] || { echo "dev-cluster: --nodes must be 1-99, not $NODES" >&2; exit 2; }
[[ $ZONES =~ ^[1-9][0-9]?$ ]] || { echo "dev-cluster: --zones must be 1-99, not $ZONES" >&2; exit 2; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() { # pidfile: SIGTERM, wait up to 20 s, then SIGKILL
  local pidfile=$1
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop_all() {
  for pidfile in "$DIR"/node*/cairnd.pid; do [[ -e $pidfile ]] && stop_pid "$pidfile"; done
  stop_pid "$DIR/etcd/etcd.pid"
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

wait_for() { # what, seconds, command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" && return 0; sleep 0.2; done
  echo "dev-cluster: $what did not happen within $seconds s" >&2; return 1
}

start_etcd() {
  mkdir -p "$DIR/etcd"
  port_free "$ETCD_PORT" || { echo "dev-cluster: port $ETCD_PORT is taken (set CAIRN_DEV_ETCD_PORT)" >&2; exit 1; }
  nohup etcd --name dev --data-dir "$DIR/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "dev=http://127.0.0.1:$((ETCD_PORT + 1))" >"$DIR/etcd/etcd.log" 2>&1 &
  echo $! >"$DIR/etcd/etcd.pid"
  wait_for "etcd start" 30 curl -sf -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$ETCD_PORT/v3/kv/range" -o /dev/null \
    || { cat "$DIR/etcd/etcd.log" >&2; exit 1; }
}

start_node() { # index [zone]
  local i=$1 name="node$1" zone=${2:-"zone$(( ($1 - 1) % ZONES + 1 ))"}
  local dir="$DIR/$name" api=$((API_BASE + i)) nbd=$((NBD_BASE + i)) iscsi=$((ISCSI_BASE + i))
  for port in $api $nbd $iscsi; do port_free "$port" || { echo "dev-cluster: port $port ($name) is taken" >&2; exit 1; }; done
  mkdir -p "$dir"
  nohup "$BIN/cairnd/cairnd" --data-dir "$dir" --cluster "etcd://127.0.0.1:$ETCD_PORT" --node "$name" --zone "$zone" --rack rack1 \
    --api-listen "http://127.0.0.1:$api" --nbd-listen "127.0.0.1:$nbd" --iscsi-listen "127.0.0.1:$iscsi" >"$dir/cairnd.log" 2>&1 &
  echo $! >"$dir/cairnd.pid"
}

status() {
  printf '%-8s %-8s %-8s %-26s %-18s %-16s %s\n' NODE ZONE STATE API NBD ISCSI LOG
  for dir in "$DIR"/node*/; do
    [[ -d $dir ]] || continue
    local name; name=$(basename "$dir")
    local state=stopped; alive "$dir/cairnd.pid" && state=running
    local api nbd iscsi
    api=$(sed -n 's/^cairnd: api listening on //p' "$dir/cairnd.log" 2>/dev/null | tail -1)
    nbd=$(sed -n 's/^cairnd: nbd listening on //p' "$dir/cairnd.log" 2>/dev/null | tail -1)
    iscsi=$(sed -n 's/^cairnd: iscsi listening on //p' "$dir/cairnd.log" 2>/dev/null | tail -1)
    local zone; zone=$(grep -o -- '--zone [^ ]*' "$dir/cmdline" 2>/dev/null | cut -d' ' -f2 || true)
    printf '%-8s %-8s %-8s %-26s %-18s %-16s %s\n' "$name" "${zone:--}" "$state" "${api:--}" "${nbd:--}" "${iscsi:--}" "$dir/cairnd.log"
  done
  local etcd_state=stopped; alive "$DIR/etcd/etcd.pid" && etcd_state=running
  echo "etcd: http://127.0.0.1:$ETCD_PORT ($etcd_state, log $DIR/etcd/etcd.log)"
}

case $command in
  start)
    if [[ -z ${CAIRN_BIN:-} ]]; then
      bash scripts/setup.sh
      echo "dev-cluster: building (Release)"
      dotnet publish src/Cairn.Daemon -c Release -o "$BIN/cairnd" --nologo -v quiet
      dotnet publish src/Cairn.Cli -c Release -o "$BIN/cairn" --nologo -v quiet
    fi
    stop_all
    start_etcd
    for i in $(seq "$NODES"); do
      start_node "$i"
      echo "--zone zone$(( (i - 1) % ZONES + 1 ))" >"$DIR/node$i/cmdline"
    done
    for i in $(seq "$NODES"); do
      log="$DIR/node$i/cairnd.log"
      wait_for "node$i ready" 60 grep -q "cairnd: ready" "$log" || { cat "$log" >&2; stop_all; exit 1; }
    done
    status
    cat <<TXT

Cairn dev cluster: $NODES nodes in $ZONES zone(s) on etcd http://127.0.0.1:$ETCD_PORT. Any node's API serves the whole cluster:
  export CAIRN_API=http://127.0.0.1:$((API_BASE + 1))
  $BIN/cairn/cairn node list
  $BIN/cairn/cairn volume create db1 --size 10GiB --replicas 3 --spread zone --dry-run --explain
  $BIN/cairn/cairn volume create db1 --size 10GiB
Stop it with: scripts/dev-cluster.sh stop [--clean]
TXT
    ;;
  status) status ;;
  kill)
    alive "$DIR/node$NODE_INDEX/cairnd.pid" || { echo "dev-cluster: node$NODE_INDEX is not running" >&2; exit 1; }
    kill -9 "$(cat "$DIR/node$NODE_INDEX/cairnd.pid")"
    rm -f "$DIR/node$NODE_INDEX/cairnd.pid"
    echo "dev-cluster: node$NODE_INDEX killed (SIGKILL); start it again with: $0 start-node $NODE_INDEX"
    ;;
  start-node)
    dir="$DIR/node$NODE_INDEX"
    alive "$dir/cairnd.pid" && { echo "dev-cluster: node$NODE_INDEX is running already" >&2; exit 1; }
    [[ -f $dir/cairnd.log ]] && mv "$dir/cairnd.log" "$dir/cairnd.log.prev"
    start_node "$NODE_INDEX" "$(grep -o -- '--zone [^ ]*' "$dir/cmdline" | cut -d' ' -f2)"
    wait_for "node$NODE_INDEX ready" 60 grep -q "cairnd: ready" "$dir/cairnd.log" || { cat "$dir/cairnd.log" >&2; exit 1; }
    echo "dev-cluster: node$NODE_INDEX started"
    ;;
  stop)
    stop_all
    [[ $CLEAN == 1 ]] && rm -rf "$DIR"
    echo "dev-cluster: stopped${CLEAN:+}"
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Starts a single-node Cairn on its embedded default (everything under ./cairn-data), creates a demo
# volume and prints how to attach it. `scripts/demo.sh stop` stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${CAIRN_DATA:-$ROOT/cairn-data}
API=${CAIRN_API:-http://127.0.0.1:9410}
NBD=${CAIRN_NBD:-127.0.0.1:10809}
ISCSI=${CAIRN_ISCSI:-127.0.0.1:3260}
PIDFILE=$DATA/cairnd.pid
OUT=$ROOT/.artifacts/bin

stop() {
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.2; done
    echo "cairnd stopped"
  fi
  rm -f "$PIDFILE"
}
if [[ ${1:-} == stop ]]; then stop; exit 0; fi

bash scripts/setup.sh
echo "demo: building (Release)"
dotnet publish src/Cairn.Daemon -c Release -o "$OUT/cairnd" --nologo -v quiet
dotnet publish src/Cairn.Cli -c Release -o "$OUT/cairn" --nologo -v quiet

stop
mkdir -p "$DATA"
nohup "$OUT/cairnd/cairnd" --data-dir "$DATA" --api-listen "$API" --nbd-listen "$NBD" --iscsi-listen "$ISCSI" >"$DATA/cairnd.log" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 150); do
  grep -q "cairnd: ready" "$DATA/cairnd.log" 2>/dev/null && break
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "cairnd failed to start:"; cat "$DATA/cairnd.log"; exit 1; }
  sleep 0.2
done
grep -q "cairnd: ready" "$DATA/cairnd.log" || { echo "cairnd did not become ready in 30 s:"; cat "$DATA/cairnd.log"; exit 1; }

cairn() { "$OUT/cairn/cairn" --api "$API" "$@"; }
cairn volume show demo >/dev/null 2>&1 || cairn volume create demo --size 1GiB >/dev/null
cairn volume show demo
cairn pool list
cat <<TXT

Cairn is running (pid $(cat "$PIDFILE"), data in $DATA, log in $DATA/cairnd.log).
  API:        $API   (OpenAPI document: $API/openapi/v1.json)
  CLI:        $OUT/cairn/cairn --api $API volume list
  Demo volume over NBD: nbd://$NBD/demo
  Demo volume over iSCSI: portal $ISCSI, target iqn.2026-11.io.cairn:demo, LUN 0

Try it:
  nbdinfo nbd://$NBD/demo
  nbdinfo --map nbd://$NBD/demo
  qemu-img info nbd://$NBD/demo
  qemu-img convert -n -O raw some-disk.img nbd://$NBD/demo
  nbd-client ${NBD%:*} ${NBD##*:} /dev/nbd0 -N demo -b 4096     # kernel block device (modprobe nbd first)
  iscsi-ls -s iscsi://$ISCSI
  iscsi-inq iscsi://$ISCSI/iqn.2026-11.io.cairn:demo/0
  iscsiadm -m discovery -t sendtargets -p $ISCSI && iscsiadm -m node -T iqn.2026-11.io.cairn:demo -p $ISCSI --login
Stop it with: scripts/demo.sh stop
TXT

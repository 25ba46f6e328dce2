#!/usr/bin/env bash
# Runs libiscsi's conformance suite (iscsi-test-cu --dataloss -t ALL) against tgt, the Linux SCSI target daemon
# (Debian package `tgt`), serving a 64 MiB file, and writes the tests tgt passes to the fixture that
# ConformanceTests checks Cairn against: Cairn must pass every one of them.
#   scripts/iscsi-tgt-conformance.sh [FIXTURE]   (needs root for tgtd)
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURE=${1:-tests/Shared/Fixtures/iscsi-test-cu-tgt-passes.txt}
command -v tgtd >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tgt >/dev/null; }
command -v iscsi-test-cu >/dev/null || bash scripts/setup.sh >/dev/null
source scripts/lib/tgt.sh

WORK=$(mktemp -d)
trap 'tgt_stop; rm -rf "$WORK"' EXIT
source bench/lib.sh
PORT=$(free_port)
IQN=iqn.2026-11.io.cairn.peer:tgt
truncate -s 64M "$WORK/lun.img"
tgt_start "$PORT" "$WORK/lun.img" "$IQN"
# tgt's LUN 0 is its controller; the disk is LUN 1.
iscsi-test-cu --dataloss -t ALL "iscsi://127.0.0.1:$PORT/$IQN/1" >"$WORK/run.log" 2>&1 || true
grep -A3 "Run Summary" "$WORK/run.log"
awk -f scripts/iscsi-test-cu-verdicts.awk "$WORK/run.log" >"$WORK/verdicts"
[[ $(wc -l <"$WORK/verdicts") -gt 100 ]] || { echo "too few verdicts parsed; see the log:" >&2; cat "$WORK/run.log" >&2; exit 1; }
{
  echo "# The iscsi-test-cu tests that tgt $(tgtd -V 2>/dev/null || true) passes (skips count as passes, as CUnit counts them),"
  echo "# with libiscsi-bin $(dpkg-query -W -f='${Version}' libiscsi-bin), run as: iscsi-test-cu --dataloss -t ALL against a 64 MiB file."
  echo "# Produced by scripts/iscsi-tgt-conformance.sh; ConformanceTests fails when Cairn fails any of them."
  awk '$2 == "passed" { print $1 }' "$WORK/verdicts" | sort
} >"$FIXTURE"
echo "tgt passes $(grep -vc '^#' "$FIXTURE") of $(wc -l <"$WORK/verdicts") tests; wrote $FIXTURE"

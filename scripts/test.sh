#!/usr/bin/env bash
# Runs Cairn's whole test suite: unit, protocol, and integration tests with real clients
# (nbdinfo, nbdcopy, qemu-img, fio) against real cairnd processes. Installs what it needs first.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

CONFIG=Release
dotnet build Cairn.slnx -c $CONFIG --nologo -v quiet -clp:ErrorsOnly || { echo "0 passed, 1 failed"; exit 1; }

mkdir -p .artifacts/test-logs
# Tests that run a long external suite (iscsi-test-cu) leave its log and a one-line summary here.
export CAIRN_TEST_LOG_DIR=$PWD/.artifacts/test-logs
rm -f "$CAIRN_TEST_LOG_DIR"/*.summary
passed=0; failed=0; skipped=0; status=0
# Each xunit v3 test project is its own executable: run it directly (the in-process runner) rather than through
# `dotnet test`, whose adapter once reported a test process that vanished as "crashed with exit code 0" and still
# let the project pass. Here the runner's own summary counts, catastrophic errors count as failures, and a project
# that exits non-zero or prints no summary fails.
# Unit and protocol tests first (fast), then integration tests that start real processes.
# CAIRN_TEST_PROJECTS="tests/A tests/B" runs only those.
PROJECTS=${CAIRN_TEST_PROJECTS:-$(ls -d tests/*.Tests | grep -v Integration; echo tests/Cairn.Integration.Tests)}
for project in $PROJECTS; do
  name=$(basename "$project")
  log=.artifacts/test-logs/$name.log
  echo "== $name"
  (cd "$project/bin/$CONFIG/net10.0" && exec "./$name" -noColor -noLogo -noAutoReporters -reporter verbose \
      -ctrf "$CAIRN_TEST_LOG_DIR/$name.ctrf.json") >"$log" 2>&1
  rc=$?
  grep -E "\[FAIL\]|\[FATAL ERROR\]|Catastrophic|Total: [0-9]+, Errors:" "$log"
  line=$(grep -E "Total: [0-9]+, Errors: [0-9]+, Failed: [0-9]+, Skipped: [0-9]+, Not Run: [0-9]+" "$log" | tail -1)
  if [[ -n $line ]]; then
    read -r t e f s n < <(sed -E 's/.*Total: ([0-9]+), Errors: ([0-9]+), Failed: ([0-9]+), Skipped: ([0-9]+), Not Run: ([0-9]+).*/\1 \2 \3 \4 \5/' <<<"$line")
    passed=$((passed + t - f - s - n)); failed=$((failed + f + e)); skipped=$((skipped + s + n))
    if [[ $rc -ne 0 && $((f + e)) -eq 0 ]]; then echo "$name: exit $rc with no failure counted; see $log"; failed=$((failed + 1)); fi
  else
    echo "$name: no test summary (exit $rc); see $log"; failed=$((failed + 1))
  fi
  [[ $rc -ne 0 ]] && status=1
done
echo
cat "$CAIRN_TEST_LOG_DIR"/*.summary 2>/dev/null
echo "Tests: $passed passed, $failed failed, $skipped skipped"
((failed > 0)) && status=1
exit $status

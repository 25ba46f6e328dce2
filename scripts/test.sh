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
# Unit and protocol tests first (fast), then integration tests that start real processes.
PROJECTS=$(ls -d tests/*.Tests | grep -v Integration; echo tests/Cairn.Integration.Tests)
for project in $PROJECTS; do
  name=$(basename "$project")
  log=.artifacts/test-logs/$name.log
  echo "== $name"
  dotnet test "$project" -c $CONFIG --no-build --nologo 2>&1 | tee "$log" | grep -E "^\s*(Failed|Passed|Skipped) |error|Passed!|Failed!|No test" || true
  rc=${PIPESTATUS[0]}
  line=$(grep -E "(Passed|Failed)! +- +Failed:" "$log" | tail -1)
  if [[ -n $line ]]; then
    f=$(sed -E 's/.*Failed: *([0-9]+).*/\1/' <<<"$line"); p=$(sed -E 's/.*Passed: *([0-9]+).*/\1/' <<<"$line")
    s=$(sed -E 's/.*Skipped: *([0-9]+).*/\1/' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  elif ! grep -q "No test is available" "$log"; then
    echo "$name: no test summary (exit $rc); see $log"; failed=$((failed + 1))
  fi
  [[ $rc -ne 0 ]] && status=1
done
echo
cat "$CAIRN_TEST_LOG_DIR"/*.summary 2>/dev/null
echo "Tests: $passed passed, $failed failed, $skipped skipped"
((failed > 0)) && status=1
exit $status

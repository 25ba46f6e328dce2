#!/usr/bin/env bash
# Longer soaks than CI runs, for when something may be rare:
#   scripts/soak.sh [--seeds N | --minutes M] [--first-seed S] [--crash-rounds R]
# - the block store's crash simulation (writes, FUA, trims, zeroes, flushes, grows, snapshots, clones, reverts) over
#   N seeds (CI runs 10,000), or through fresh seeds for M minutes, on a simulated disk that tears and loses unsynced
#   writes and fails chosen sectors; a failing seed prints itself and replays exactly with --first-seed S --seeds 1;
# - the kill -9 test against real cairnd processes, R times (CI runs it once, three crashes per run).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=100000; FIRST=0; ROUNDS=5; MINUTES=0
while (($#)); do case $1 in
  --seeds) SEEDS=$2; shift 2;; --minutes) MINUTES=$2; shift 2;; --first-seed) FIRST=$2; shift 2;; --crash-rounds) ROUNDS=$2; shift 2;;
  *) echo "usage: $0 [--seeds N | --minutes M] [--first-seed S] [--crash-rounds R]" >&2; exit 2;; esac; done

bash scripts/setup.sh
dotnet build Cairn.slnx -c Release --nologo -v quiet -clp:ErrorsOnly
if [[ $MINUTES != 0 ]]; then echo "soak: crash simulation for $MINUTES minutes from seed $FIRST"
else echo "soak: crash simulation, seeds $FIRST..$((FIRST + SEEDS - 1))"; fi
CAIRN_CRASH_SEEDS=$SEEDS CAIRN_CRASH_FIRST_SEED=$FIRST CAIRN_CRASH_MINUTES=$MINUTES \
  dotnet test tests/Cairn.BlockStore.Tests -c Release --no-build --nologo --filter "FullyQualifiedName~Random_crashes" \
    --logger "console;verbosity=detailed" | grep -E "crash seeds|seed [0-9]+:|^ *(Passed|Failed) "
for round in $(seq "$ROUNDS"); do
  echo "soak: kill -9 round $round of $ROUNDS"
  dotnet test tests/Cairn.Integration.Tests -c Release --no-build --nologo --filter "FullyQualifiedName~CrashTests" \
    --logger "console;verbosity=detailed" | grep -E "seed [0-9-]+|round [0-9]+:|^ *(Passed|Failed) "
done

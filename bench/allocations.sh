#!/usr/bin/env bash
# Per-IO cost and allocations (BenchmarkDotNet [MemoryDiagnoser]) of the block store and of the NBD request path.
# The "Allocated" column is bytes per IO; the goal is 0 on the steady-state read and write paths.
#   bench/allocations.sh                      # everything
#   bench/allocations.sh --filter '*Nbd*'     # one class (any BenchmarkDotNet arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[[ " ${args[*]} " == *" --filter "* ]] || args+=(--filter '*')
dotnet run -c Release --project bench/Cairn.Benchmarks -- --job short "${args[@]}"

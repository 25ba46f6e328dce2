#!/usr/bin/env bash
# The control plane at cluster scale: placement latency (p50/p99), cluster-store keys and watch events for a simulated
# cluster of NODES nodes and VOLUMES volumes (default 1000 and 100000), through the real ClusterView, Placer, Controller
# and embedded cluster store. Takes a few minutes at the defaults on a 2-core machine.
#   bench/scale-sim.sh [NODES] [VOLUMES]
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet run -c Release --project bench/Cairn.Benchmarks -- scale "$@"

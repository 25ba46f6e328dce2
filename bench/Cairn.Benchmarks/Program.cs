using BenchmarkDotNet.Running;

// Allocation and per-IO cost benchmarks. Example: bench/allocations.sh  (or pass BenchmarkDotNet arguments through).
BenchmarkSwitcher.FromAssembly(typeof(Cairn.Benchmarks.StoreIoBenchmarks).Assembly).Run(args);

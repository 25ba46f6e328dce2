using BenchmarkDotNet.Running;

// Allocation and per-IO cost benchmarks. Example: bench/allocations.sh  (or pass BenchmarkDotNet arguments through).
// "scale [NODES] [VOLUMES]" runs the control-plane scale simulation instead (bench/scale-sim.sh).
if (args.Length > 0 && args[0] == "scale")
{
    return await Cairn.Benchmarks.ScaleSimulation.RunAsync(args[1..]);
}
BenchmarkSwitcher.FromAssembly(typeof(Cairn.Benchmarks.StoreIoBenchmarks).Assembly).Run(args);
return 0;

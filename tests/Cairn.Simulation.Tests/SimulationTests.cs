using System.Collections.Concurrent;
using System.Diagnostics;
using Cairn.Simulation.Tests.Sim;

namespace Cairn.Simulation.Tests;

/// <summary>
/// The seeded simulation of synchronous replication: thousands of seeds per run, each a different mix of message
/// loss, delays, partitions and crashes. CAIRN_SIM_SEEDS and CAIRN_SIM_FIRST_SEED pick the range;
/// CAIRN_SIM_SEED=N replays one seed and prints its whole trace.
/// </summary>
public sealed class SimulationTests
{
    private static readonly int Seeds = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_SIM_SEEDS"), out int n) ? n : 2_000;
    private static readonly int FirstSeed = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_SIM_FIRST_SEED"), out int f) ? f : 0;
    private static readonly int? ReplaySeed = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_SIM_SEED"), out int r) ? r : null;

    [Fact]
    public async Task Thousands_of_seeds_keep_every_acknowledged_write_and_never_read_stale_data()
    {
        var failures = new ConcurrentBag<SimResult>();
        var clock = Stopwatch.StartNew();
        int next = FirstSeed;
        int last = FirstSeed + Seeds;
        // One simulation per core at a time; each runs wholly on its own thread, so the seed alone fixes its course.
        var workers = Enumerable.Range(0, Environment.ProcessorCount).Select(_ => Task.Factory.StartNew(() =>
        {
            for (int seed = Interlocked.Increment(ref next) - 1; seed < last && failures.Count < 20; seed = Interlocked.Increment(ref next) - 1)
            {
                var result = SimRun.Run(seed);
                if (!result.Passed)
                {
                    failures.Add(result);
                }
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        await Task.WhenAll(workers);
        TestContext.Current.TestOutputHelper?.WriteLine($"{Seeds} simulation seeds from {FirstSeed} in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(failures.IsEmpty, $"{failures.Count} seeds failed; replay one with its trace: CAIRN_SIM_SEED=<seed> dotnet test " +
            "--filter Replay_one_seed (or CAIRN_SIM_FIRST_SEED=<seed> CAIRN_SIM_SEEDS=1)\n" +
            string.Join("\n", failures.OrderBy(x => x.Seed).Select(Describe)));
    }

    /// <summary>CAIRN_SIM_SEED=N: runs seed N once, printing every event; otherwise seed 0.</summary>
    [Fact]
    public void Replay_one_seed()
    {
        int seed = ReplaySeed ?? 0;
        var result = SimRun.Run(seed, trace: ReplaySeed is null ? null : line => TestContext.Current.TestOutputHelper?.WriteLine(line));
        TestContext.Current.TestOutputHelper?.WriteLine(result.Summary);
        Assert.True(result.Passed, Describe(result));
    }

    [Theory]
    [InlineData(3)]
    [InlineData(42)]
    [InlineData(1234)]
    public void The_same_seed_gives_the_same_trace(int seed)
    {
        var first = SimRun.Run(seed);
        var second = SimRun.Run(seed, trace: _ => { }); // formatting the trace must not change the run
        Assert.Equal(first.TraceHash, second.TraceHash);
        Assert.Equal(first.Summary, second.Summary);
        Assert.NotEqual(first.TraceHash, SimRun.Run(seed + 1).TraceHash);
    }

    private static string Describe(SimResult result) =>
        $"seed {result.Seed} (replay: CAIRN_SIM_SEED={result.Seed} dotnet test --filter Replay_one_seed): {string.Join("\n    ", result.Violations.Take(5))}";
}

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

    /// <summary>CAIRN_SIM_PRODUCTION_FAILOVER=1: fail over with production's ReplicaSet rule alone (known to lose writes; see README.md).</summary>
    private static readonly bool ProductionFailover = Environment.GetEnvironmentVariable("CAIRN_SIM_PRODUCTION_FAILOVER") == "1";

    private static SimOptions OptionsFor(int seed) => SimOptions.FromSeed(seed) with { SafeFailover = !ProductionFailover };

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
                var result = SimRun.Run(seed, OptionsFor(seed));
                if (!result.Passed)
                {
                    failures.Add(result);
                }
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        await Task.WhenAll(workers);
        TestContext.Current.TestOutputHelper?.WriteLine($"{Seeds} simulation seeds from {FirstSeed} in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(failures.IsEmpty, $"{failures.Count} seeds failed; replay one with its trace: CAIRN_SIM_SEED=<seed> dotnet test -c Release " +
            "--filter Replay_one_seed --logger \"console;verbosity=detailed\" (or rerun it alone: CAIRN_SIM_FIRST_SEED=<seed> CAIRN_SIM_SEEDS=1)\n" +
            string.Join("\n", failures.OrderBy(x => x.Seed).Select(Describe)));
    }

    /// <summary>CAIRN_SIM_SEED=N: runs seed N once, printing every event; otherwise seed 0.</summary>
    [Fact]
    public void Replay_one_seed()
    {
        int seed = ReplaySeed ?? 0;
        var result = SimRun.Run(seed, OptionsFor(seed), trace: ReplaySeed is null ? null : line => TestContext.Current.TestOutputHelper?.WriteLine(line));
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

    /// <summary>Seeds run side by side on several threads come out exactly as when run alone.</summary>
    [Fact]
    public async Task Seeds_run_in_parallel_give_the_same_traces_as_alone()
    {
        int[] seeds = [.. Enumerable.Range(100, 16)];
        var alone = seeds.Select(s => SimRun.Run(s).TraceHash).ToArray();
        var parallel = await Task.WhenAll(seeds.Select(s => Task.Factory.StartNew(() => SimRun.Run(s).TraceHash, TaskCreationOptions.LongRunning)));
        Assert.Equal(alone, parallel);
    }

    /// <summary>The determinism guard itself: code that hops to the thread pool fails the run instead of racing it.</summary>
    [Fact]
    public void Work_that_leaves_the_simulation_loop_fails_the_run()
    {
        var h = new SimHarness(SimHarness.Quiet(2));
        var escaped = Assert.Throws<InvalidOperationException>(() => h.Run(async () =>
        {
            // What `await Task.Run(...)` or a real timer does: post a continuation from another thread. Done by hand,
            // joined, so the test does not depend on when the thread pool gets round to it.
            var loop = SynchronizationContext.Current!;
            var other = new Thread(() => loop.Post(_ => { }, null));
            other.Start();
            other.Join();
            await h.Sleep(1);
        }));
        Assert.Contains("not the simulation loop", escaped.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// KNOWN VIOLATION of invariant 1 by production's failover rule (<c>ReplicaSet.FailOver</c> promotes any in-sync
    /// replica whose node is up), found by this simulation and kept here as evidence:
    /// <list type="bullet">
    /// <item>seed 660: the owner n0 is cut off from the store; replica n1 crashes (losing acknowledged writes still in
    /// its cache) and comes back; nothing marked it out of sync, so when n0's lease expires n1 is promoted and serves
    /// zeros for a write that n0 — alive, complete, merely cut off — still holds.</item>
    /// <item>seed 116: the owner n1's lease runs out (cut off from the store) a moment after replica n2 crashed; n2's
    /// lease has not expired yet, so it is promoted and n1 marked failed. n2 never serves; when it comes back it is the
    /// only in-sync replica and restarts in place without the writes it lost, while n1 still has them. A failover
    /// whose new owner never served cannot be undone.</item>
    /// </list>
    /// With the rules <see cref="SimOptions.SafeFailover"/> models, the same seeds pass. The seed numbers pin this
    /// version of the simulator: a change to it reshuffles runs; find new ones with CAIRN_SIM_PRODUCTION_FAILOVER=1.
    /// </summary>
    /// <summary>
    /// Pins a known gap of production's failover rule (see README): with it, some seeds promote a replica that lost
    /// acknowledged writes. Which seeds do shifts whenever the code under test changes its event order, so this
    /// searches for the first one rather than naming it, and checks the safe rule passes that same seed.
    /// </summary>
    [Fact]
    public void KNOWN_VIOLATION_production_failover_promotes_a_replica_that_lost_acknowledged_writes()
    {
        SimResult? violating = null;
        for (int seed = 0; seed < 4000 && violating is null; seed++)
        {
            var production = SimRun.Run(seed, SimOptions.FromSeed(seed) with { SafeFailover = false });
            if (production.Violations.Any(v => v.Contains("older than", StringComparison.Ordinal)))
            {
                violating = production;
            }
        }
        Assert.NotNull(violating);
        var safe = SimRun.Run(violating.Seed, SimOptions.FromSeed(violating.Seed));
        Assert.True(safe.Passed, Describe(safe));
    }

    private static string Describe(SimResult result) =>
        $"seed {result.Seed} (replay: CAIRN_SIM_SEED={result.Seed} dotnet test -c Release --filter Replay_one_seed --logger \"console;verbosity=detailed\"): {string.Join("\n    ", result.Violations.Take(5))}";
}

using System.Collections.Concurrent;
using System.Diagnostics;

namespace Cairn.BlockStore.Tests;

public sealed class CrashSafetyTests
{
    /// <summary>
    /// 10,000 seeds in the normal run, spread over the cores (about a minute on two). CAIRN_CRASH_SEEDS and
    /// CAIRN_CRASH_FIRST_SEED pick others; CAIRN_CRASH_MINUTES=N keeps going through fresh seeds for N minutes (soak).
    /// </summary>
    private static readonly int Seeds = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_CRASH_SEEDS"), out int n) ? n : 10_000;
    private static readonly int FirstSeed = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_CRASH_FIRST_SEED"), out int f) ? f : 0;
    private static readonly double Minutes = double.TryParse(Environment.GetEnvironmentVariable("CAIRN_CRASH_MINUTES"), out double m) ? m : 0;

    [Fact]
    public async Task Random_crashes_never_lose_durable_writes_or_return_garbage()
    {
        var failures = new ConcurrentBag<(int Seed, string Message)>();
        var clock = Stopwatch.StartNew();
        int next = FirstSeed;
        int last = Minutes > 0 ? int.MaxValue : FirstSeed + Seeds;
        int ran = 0;
        var workers = Enumerable.Range(0, Environment.ProcessorCount).Select(_ => Task.Run(() =>
        {
            while (true)
            {
                int seed = Interlocked.Increment(ref next) - 1;
                if (seed >= last || (Minutes > 0 && clock.Elapsed.TotalMinutes >= Minutes) || failures.Count >= 20)
                {
                    return;
                }
                Interlocked.Increment(ref ran);
                try
                {
                    CrashSimulation.Run(seed);
                }
                catch (Exception ex)
                {
                    failures.Add((seed, $"seed {seed}: {ex.GetType().Name}: {ex.Message}"));
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);
        TestContext.Current.TestOutputHelper?.WriteLine($"{ran} crash seeds from {FirstSeed} in {clock.Elapsed.TotalSeconds:F0} s");
        Assert.True(failures.IsEmpty,
            $"{failures.Count} of {ran} crash seeds failed; replay one exactly with CAIRN_CRASH_FIRST_SEED=<seed> CAIRN_CRASH_SEEDS=1, " +
            "or add it to Replay_seed for a trace of every operation:\n" + string.Join("\n", failures.OrderBy(x => x.Seed).Select(x => x.Message)));
    }

    /// <summary>Replays single seeds with the full stack trace and every operation in the test output; add a failing seed here while debugging it.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void Replay_seed(int seed) => CrashSimulation.Run(seed, trace: line => TestContext.Current.TestOutputHelper?.WriteLine(line));
}

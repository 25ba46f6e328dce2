namespace Cairn.BlockStore.Tests;

public sealed class CrashSafetyTests
{
    /// <summary>400 in the normal run (about a second idle); set CAIRN_CRASH_SEEDS=10000 (and CAIRN_CRASH_FIRST_SEED) for a soak.</summary>
    private static readonly int Seeds = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_CRASH_SEEDS"), out int n) ? n : 400;
    private static readonly int FirstSeed = int.TryParse(Environment.GetEnvironmentVariable("CAIRN_CRASH_FIRST_SEED"), out int f) ? f : 0;

    [Fact]
    public void Random_crashes_never_lose_durable_writes_or_return_garbage()
    {
        var failures = new List<string>();
        for (int seed = FirstSeed; seed < FirstSeed + Seeds; seed++)
        {
            try
            {
                CrashSimulation.Run(seed);
            }
            catch (Exception ex)
            {
                failures.Add($"seed {seed}: {ex.GetType().Name}: {ex.Message}");
            }
        }
        Assert.True(failures.Count == 0,
            $"{failures.Count} of {Seeds} crash seeds failed (replay one with CrashSafetyTests.Replay_seed):\n" + string.Join("\n", failures.Take(20)));
    }

    /// <summary>Replays single seeds with the full stack trace; add a failing seed here while debugging it.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void Replay_seed(int seed) => CrashSimulation.Run(seed);
}

namespace Cairn.BlockStore.Tests;

public sealed class CrashSafetyTests
{
    private const int Seeds = 400;

    [Fact]
    public void Random_crashes_never_lose_durable_writes_or_return_garbage()
    {
        var failures = new List<string>();
        for (int seed = 0; seed < Seeds; seed++)
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

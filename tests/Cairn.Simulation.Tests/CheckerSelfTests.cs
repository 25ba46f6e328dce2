using Cairn.Simulation.Tests.Sim;

namespace Cairn.Simulation.Tests;

/// <summary>
/// A checker that never fails proves nothing. Each defect here is switched on deliberately and must be caught within
/// a few hundred seeds — by the data checks alone (the store-transition checks are off, so a defect cannot be caught
/// merely because it changes the store in a way the structural check forbids).
/// </summary>
public sealed class CheckerSelfTests
{
    private const int SeedsToTry = 400;

    [Theory]
    [InlineData(SimBugs.ReplicaDropsWrites)]
    [InlineData(SimBugs.SkipEpochBump)]
    [InlineData(SimBugs.PromoteAnyReplica)]
    [InlineData(SimBugs.IgnoreLeaseOnFailover)]
    internal void A_deliberate_defect_is_caught(SimBugs bug)
    {
        var caught = FirstFailure(seed => SimOptions.FromSeed(seed) with { Bugs = bug }, checkStoreTransitions: false);
        Assert.True(caught is not null, $"{bug}: no seed of {SeedsToTry} caught it");
        TestContext.Current.TestOutputHelper?.WriteLine($"{bug}: caught by seed {caught.Seed}: {caught.Violations[0]}");
    }

    [Fact]
    public void The_store_transition_checks_catch_a_stale_promotion_at_once()
    {
        var caught = FirstFailure(seed => SimOptions.FromSeed(seed) with { Bugs = SimBugs.PromoteAnyReplica }, checkStoreTransitions: true);
        Assert.NotNull(caught);
        Assert.Contains(caught.Violations, v => v.Contains("was promoted but was Failed", StringComparison.Ordinal));
    }

    private static SimResult? FirstFailure(Func<int, SimOptions> options, bool checkStoreTransitions)
    {
        for (int seed = 0; seed < SeedsToTry; seed++)
        {
            var result = SimRun.Run(seed, options(seed), checkStoreTransitions: checkStoreTransitions);
            if (!result.Passed)
            {
                return result;
            }
        }
        return null;
    }
}

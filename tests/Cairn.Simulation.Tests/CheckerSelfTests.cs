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

    /// <summary>
    /// A controller that fails over while the old owner still holds its lease: for a while two owners serve, and the
    /// old one answers reads from a replica that misses the new one's writes. Random seeds hit that window rarely,
    /// so the scenario is scripted (the lease is long, so the window is wide).
    /// </summary>
    [Fact]
    public void A_controller_that_fails_over_before_the_lease_expired_is_caught()
    {
        var h = new SimHarness(SimHarness.Quiet(3) with { Bugs = SimBugs.IgnoreLeaseOnFailover, LeaseTtlUs = 300_000 });
        h.Run(async () =>
        {
            var attached = h.Client(0, pinnedTo: "n0");
            var other = h.Client(1);
            await h.Sleep(50_000);
            Assert.True((await h.Write(attached, block: 0, version: 1)).Ok);
            h.Cluster.Network.Cut("n0", SimNetwork.Store); // n0 misses heartbeats but its lease runs 300 ms
            await h.Sleep(40_000);
            Assert.Equal("n1", h.Cluster.Store.Set.Owner);
            Assert.True((await h.Write(other, block: 0, version: 2)).Ok);
            Assert.True((await h.Read(attached, 0)).Ok);
        });
        Assert.Contains(h.Checker.Violations, v => v.Contains("older than v2", StringComparison.Ordinal));
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

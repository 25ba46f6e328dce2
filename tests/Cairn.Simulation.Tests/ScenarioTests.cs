using Cairn.Replication;
using Cairn.Simulation.Tests.Sim;

namespace Cairn.Simulation.Tests;

/// <summary>
/// Targeted failures, scripted at chosen moments on an otherwise quiet simulated cluster, with the checker watching.
/// </summary>
public sealed class ScenarioTests
{
    private const long Settle = 50_000;      // the first owner is serving
    private const long FailedOver = 250_000; // lease expired (60 ms), controller acted, new owner said hello

    [Fact]
    public void Owner_crash_after_an_acknowledgement_keeps_the_write_on_the_new_owner()
    {
        var h = new SimHarness(SimHarness.Quiet(3));
        h.Run(async () =>
        {
            var client = h.Client(0);
            await h.Sleep(Settle);
            Assert.True((await h.Write(client, block: 0, version: 1)).Ok); // no FUA: only in caches
            h.Cluster.Crash("n0");
            await h.Sleep(FailedOver);
            Assert.NotEqual("n0", h.Cluster.Store.Set.Owner);
            var read = await h.Read(client, 0);
            Assert.True(read.Ok, read.Error);
            Assert.Equal(1, Payload.VersionOf(0, read.Data));
        });
        Assert.Empty(h.Checker.Violations);
    }

    /// <summary>
    /// The owner is cut off from the store but not from its replicas or its hosts. Once the controller has failed over,
    /// it must not acknowledge: with its lease check the volume refuses; without it the replicas refuse its requests,
    /// because the new owner raised their epoch, and the volume fences itself.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Owner_cut_off_from_the_store_cannot_acknowledge_after_the_new_owner_took_over(bool ownerHonoursLease)
    {
        var h = new SimHarness(SimHarness.Quiet(3) with { OwnerHonoursLease = ownerHonoursLease });
        h.Run(async () =>
        {
            var attached = h.Client(0, pinnedTo: "n0");
            var other = h.Client(1);
            await h.Sleep(Settle);
            Assert.True((await h.Write(attached, block: 0, version: 1)).Ok);
            h.Cluster.Network.Cut("n0", SimNetwork.Store);
            await h.Sleep(FailedOver);
            Assert.Equal("n1", h.Cluster.Store.Set.Owner);
            var late = await h.Write(attached, block: 1, version: 1);
            Assert.False(late.Ok, "the deposed owner acknowledged a write after the failover");
            Assert.Contains(ownerHonoursLease ? "its lease in the cluster store lapsed" : "another owner took over", late.Error, StringComparison.Ordinal);
            Assert.True((await h.Write(other, block: 2, version: 1)).Ok);
            Assert.Equal(1, Payload.VersionOf(0, (await h.Read(other, 0)).Data));
        });
        Assert.Empty(h.Checker.Violations);
    }

    /// <summary>
    /// n2 misses a write (dropped, bumping the epoch), then the owner crashes while the only complete replica, n1, is
    /// out of the controller's reach. n2 is alive and reachable but stale: the volume must wait, not promote it.
    /// </summary>
    [Fact]
    public void A_stale_replica_is_never_promoted()
    {
        var h = new SimHarness(SimHarness.Quiet(3));
        var owners = new List<string>();
        h.Cluster.Store.Committed += (_, next, _) => owners.Add(next.Owner);
        h.Run(async () =>
        {
            var client = h.Client(0);
            await h.Sleep(Settle);
            h.Cluster.Network.Cut("n0", "n2");
            Assert.True((await h.Write(client, block: 0, version: 1)).Ok);
            Assert.Equal(ReplicaState.Failed, h.Cluster.Store.Set.Find("n2")!.State);
            h.Cluster.Network.Heal("n0", "n2");
            h.Cluster.Network.Cut("n1", SimNetwork.Store);
            h.Cluster.Crash("n0");
            await h.Sleep(2 * FailedOver);
            Assert.Equal("n0", h.Cluster.Store.Set.Owner); // nobody promotable: waiting
            h.Cluster.Network.Heal("n1", SimNetwork.Store);
            await h.Sleep(FailedOver);
            Assert.Equal("n1", h.Cluster.Store.Set.Owner);
            Assert.Equal(1, Payload.VersionOf(0, (await h.Read(client, 0)).Data));
        });
        Assert.DoesNotContain("n2", owners);
        Assert.Empty(h.Checker.Violations);
    }

    /// <summary>
    /// Why <see cref="ReplicatedVolume"/> checks <see cref="IOwnerLease"/> before it serves a read: a deposed owner that
    /// hosts still reach — cut off from the store only — would otherwise answer reads with data older than what the new
    /// owner has acknowledged since. Writes would stay safe (the new owner's epoch fences them); reads would not. The
    /// volume here is built without the lease, and the checker must catch the stale read.
    /// </summary>
    [Fact]
    public void Without_the_lease_check_a_deposed_owner_serves_stale_reads_and_the_checker_catches_them()
    {
        var h = new SimHarness(SimHarness.Quiet(3) with { OwnerHonoursLease = false });
        h.Run(async () =>
        {
            var attached = h.Client(0, pinnedTo: "n0");
            var other = h.Client(1);
            await h.Sleep(Settle);
            Assert.True((await h.Write(attached, block: 0, version: 1)).Ok);
            h.Cluster.Network.Cut("n0", SimNetwork.Store);
            await h.Sleep(FailedOver);
            Assert.True((await h.Write(other, block: 0, version: 2)).Ok); // acknowledged by the new owner
            var stale = await h.Read(attached, 0);
            Assert.True(stale.Ok, "the deposed owner refused the read although the volume has no lease check");
            Assert.Equal(1, Payload.VersionOf(0, stale.Data));
        });
        Assert.Contains(h.Checker.Violations, v => v.Contains("older than v2", StringComparison.Ordinal));
    }
}

namespace Cairn.Replication.Tests;

public sealed class ReplicaSetTests
{
    private static ReplicaSet Three() => ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")]);

    [Fact]
    public void A_new_set_is_all_in_sync_at_epoch_1_owned_by_the_first()
    {
        var set = Three();
        Assert.Equal(1UL, set.Epoch);
        Assert.Equal("n1", set.Owner);
        Assert.Equal(["n2", "n3"], set.InSyncRemotes.Select(m => m.Node));
        Assert.Throws<ArgumentException>(() => ReplicaSet.Create([("n1", "p"), ("n1", "q")]));
    }

    [Fact]
    public void Dropping_bumps_the_epoch_and_remembers_when_it_left()
    {
        var dropped = Three().Drop(["n2"], "write failed");
        Assert.Equal(2UL, dropped.Epoch);
        var n2 = dropped.Find("n2")!;
        Assert.Equal(ReplicaState.Failed, n2.State);
        Assert.Equal(1UL, n2.FailedAtEpoch);
        Assert.Equal(["n3"], dropped.InSyncRemotes.Select(m => m.Node));
        Assert.Throws<ArgumentException>(() => dropped.Drop(["n1"], "x"));
    }

    [Fact]
    public void A_failed_replica_rejoins_only_through_rebuild_and_admission()
    {
        var set = Three().Drop(["n2"], "gone");
        Assert.Throws<InvalidOperationException>(() => set.Admit("n2"));
        var rebuilding = set.StartRebuild("n2");
        Assert.Equal(set.Epoch, rebuilding.Epoch);
        Assert.Equal(ReplicaState.Rebuilding, rebuilding.Find("n2")!.State);
        var admitted = rebuilding.Admit("n2");
        Assert.Equal(set.Epoch + 1, admitted.Epoch);
        Assert.Equal(ReplicaState.InSync, admitted.Find("n2")!.State);
        Assert.Equal(0UL, admitted.Find("n2")!.FailedAtEpoch);
    }

    [Fact]
    public void Fail_over_promotes_an_in_sync_replica_on_a_live_node_and_never_a_stale_one()
    {
        var set = Three().Drop(["n2"], "gone");
        var next = set.FailOver(node => node != "n1");
        Assert.NotNull(next);
        Assert.Equal("n3", next.Owner);
        Assert.Equal(set.Epoch + 1, next.Epoch);
        Assert.Equal(ReplicaState.Failed, next.Find("n1")!.State);
        Assert.Equal(ReplicaState.Failed, next.Find("n2")!.State);

        Assert.Null(set.FailOver(node => node == "n2")); // only the stale replica is up: wait
    }

    [Fact]
    public void Adding_and_removing_replicas()
    {
        var added = Three().Add("n4", "p");
        Assert.Equal(1UL, added.Epoch);
        Assert.Equal(ReplicaState.Failed, added.Find("n4")!.State);
        Assert.Throws<InvalidOperationException>(() => added.Add("n4", "p"));
        Assert.Equal(1UL, added.Remove("n4").Epoch);   // never in sync: no bump
        Assert.Equal(2UL, added.Remove("n3").Epoch);   // in sync: bump
        Assert.Throws<InvalidOperationException>(() => added.Remove("n1"));
    }
}

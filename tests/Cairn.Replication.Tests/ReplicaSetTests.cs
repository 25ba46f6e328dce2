namespace Cairn.Replication.Tests;

public sealed class ReplicaSetTests
{
    /// <summary>Every node on its first boot, "&lt;node&gt;.1"; a restart makes it ".2".</summary>
    private static string? FirstBoot(string node) => node + ".1";

    private static ReplicaSet Three() => ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")], FirstBoot);

    /// <summary>Current boots: every node up on its first boot except those listed as down or restarted.</summary>
    private static Func<string, string?> Boots(string[]? down = null, string[]? restarted = null) => node =>
        down?.Contains(node) == true ? null : restarted?.Contains(node) == true ? node + ".2" : node + ".1";

    [Fact]
    public void A_new_set_is_all_in_sync_at_epoch_1_owned_by_the_first_at_each_node_s_boot()
    {
        var set = Three();
        Assert.Equal(1UL, set.Epoch);
        Assert.Equal("n1", set.Owner);
        Assert.Equal(["n2", "n3"], set.InSyncRemotes.Select(m => m.Node));
        Assert.Equal(["n1.1", "n2.1", "n3.1"], set.Members.Select(m => m.Boot));
        Assert.Null(set.LastServed);
        Assert.Throws<ArgumentException>(() => ReplicaSet.Create([("n1", "p"), ("n1", "q")], FirstBoot));
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
    public void A_drop_records_the_oldest_epoch_whose_writes_the_replica_may_lack_never_a_later_one()
    {
        var set = Three().Drop(["n2"], "write failed") with { Epoch = 5 };
        var dropped = set.Drop(["n3"], "write failed", missingSince: 3); // writes of epoch 3 were not yet flushed
        Assert.Equal((3UL, 6UL), (dropped.Find("n3")!.FailedAtEpoch, dropped.Epoch));
        Assert.Equal(1UL, dropped.Find("n2")!.FailedAtEpoch); // already out: unchanged
        Assert.Equal(5UL, set.Drop(["n3"], "x", missingSince: 9).Find("n3")!.FailedAtEpoch); // never past the epoch it leaves at
    }

    [Fact]
    public void A_failed_replica_rejoins_only_through_rebuild_and_admission_at_the_boot_its_rebuild_started_at()
    {
        var set = Three().Drop(["n2"], "gone");
        Assert.Throws<InvalidOperationException>(() => set.Admit("n2"));
        var rebuilding = set.StartRebuild("n2", "n2.2");
        Assert.Equal(set.Epoch, rebuilding.Epoch);
        Assert.Equal(ReplicaState.Rebuilding, rebuilding.Find("n2")!.State);
        var admitted = rebuilding.Admit("n2");
        Assert.Equal(set.Epoch + 1, admitted.Epoch);
        Assert.Equal(ReplicaState.InSync, admitted.Find("n2")!.State);
        Assert.Equal(0UL, admitted.Find("n2")!.FailedAtEpoch);
        Assert.Equal("n2.2", admitted.Find("n2")!.Boot);
        Assert.True(ReplicaSet.IsIntact(admitted.Find("n2")!, Boots(restarted: ["n2"])));
        Assert.False(ReplicaSet.IsIntact(admitted.Find("n2")!, Boots()));
    }

    [Fact]
    public void Fail_over_promotes_an_in_sync_replica_on_a_live_node_and_never_a_stale_one()
    {
        var set = Three().Drop(["n2"], "gone");
        var next = set.FailOver(Boots(down: ["n1"]));
        Assert.NotNull(next);
        Assert.Equal("n3", next.Owner);
        Assert.Equal(set.Epoch + 1, next.Epoch);
        Assert.Equal(ReplicaState.Failed, next.Find("n1")!.State);
        Assert.Equal(ReplicaState.Failed, next.Find("n2")!.State);

        Assert.Null(set.FailOver(Boots(down: ["n1", "n3"]))); // only the stale replica is up: wait
    }

    [Fact]
    public void Fail_over_never_promotes_a_replica_whose_node_restarted_since_it_joined_and_marks_it_failed()
    {
        var next = Three().FailOver(Boots(down: ["n1"], restarted: ["n2"]));
        Assert.NotNull(next);
        Assert.Equal("n3", next.Owner);
        var n2 = next.Find("n2")!;
        Assert.Equal(ReplicaState.Failed, n2.State);
        Assert.Contains("restarted", n2.Reason, StringComparison.Ordinal);
        Assert.Equal("n2.1", n2.Boot); // the boot it was last in sync at, kept
        Assert.Equal(ReplicaSet.FirstEpoch, n2.FailedAtEpoch); // what it lost from its cache may be of any epoch: no history may resync it from a later one
    }

    [Fact]
    public void When_the_only_other_in_sync_replica_restarted_the_volume_waits_for_its_owner()
    {
        var set = ReplicaSet.Create([("n1", "p"), ("n2", "p")], FirstBoot);
        // n1 is only cut off (same boot when it returns): it may hold writes n2 lost from its cache.
        Assert.Null(set.FailOver(Boots(down: ["n1"], restarted: ["n2"])));
        Assert.Null(set.FailOver(Boots(down: ["n1", "n2"])));
    }

    [Fact]
    public void When_every_in_sync_replica_restarted_the_owner_keeps_the_volume_at_its_new_boot_and_the_rest_are_resynced()
    {
        var set = Three();
        var next = set.FailOver(Boots(restarted: ["n1", "n2", "n3"]));
        Assert.NotNull(next);
        Assert.Equal("n1", next.Owner);
        Assert.Equal(2UL, next.Epoch);
        Assert.Equal("n1.2", next.Find("n1")!.Boot);
        Assert.Equal(["n1"], next.InSync.Select(m => m.Node));
        Assert.All(["n2", "n3"], n => Assert.Equal(ReplicaState.Failed, next.Find(n)!.State));
        // A single-copy volume whose node restarted comes back the same way.
        var alone = ReplicaSet.Create([("n1", "p")], FirstBoot).FailOver(Boots(restarted: ["n1"]));
        Assert.Equal(("n1", "n1.2"), (alone!.Owner, alone.Find("n1")!.Boot));
    }

    [Fact]
    public void The_owner_is_gone_when_its_node_is_down_or_restarted_and_only_then_is_there_a_failover()
    {
        var set = Three();
        Assert.False(set.NeedsFailOver(Boots()));
        Assert.Null(set.FailOver(Boots()));
        Assert.True(set.NeedsFailOver(Boots(down: ["n1"])));
        Assert.True(set.NeedsFailOver(Boots(restarted: ["n1"])));
        var next = set.FailOver(Boots(restarted: ["n1"]));
        Assert.Equal("n2", next!.Owner); // a restarted owner's copy may have lost writes that n2 and n3 hold
        Assert.Equal(ReplicaState.Failed, next.Find("n1")!.State);
    }

    [Fact]
    public void Records_without_boots_are_never_proof_of_intact_replicas_and_an_unknown_owner_that_is_up_keeps_serving()
    {
        var legacy = new ReplicaSet(7, "n1", [new("n1", "p", ReplicaState.InSync), new("n2", "p", ReplicaState.InSync), new("n3", "p", ReplicaState.InSync, Boot: "n3.1")]);
        Assert.False(legacy.NeedsFailOver(Boots()));
        Assert.False(ReplicaSet.IsIntact(legacy.Find("n2")!, Boots()));
        Assert.False(ReplicaSet.HasRestarted(legacy.Find("n2")!, Boots()));
        // n3's boot shows it kept its writes: it wins over n2, first in member order but unknown.
        Assert.Equal("n3", legacy.FailOver(Boots(down: ["n1"]))!.Owner);
        // No member can show it: the first live one takes the volume at its boot, the others are resynced from it.
        var unknown = legacy with { Members = [.. legacy.Members.Select(m => m with { Boot = null })] };
        var next = unknown.FailOver(Boots(down: ["n1"]));
        Assert.Equal(("n2", "n2.1"), (next!.Owner, next.Find("n2")!.Boot));
        Assert.Equal(["n2"], next.InSync.Select(m => m.Node));
    }

    [Fact]
    public void A_failover_is_unserved_until_its_owner_says_it_serves_and_drops_meanwhile_keep_that()
    {
        var set = Three();
        var failedOver = set.FailOver(Boots(down: ["n1"]))!;
        Assert.Equal("n2", failedOver.Owner);
        Assert.True(set.SameAs(failedOver.LastServed));
        var dropped = failedOver.Drop(["n3"], "did not answer"); // the new owner, opening
        Assert.True(set.SameAs(dropped.LastServed));
        var served = dropped.MarkServed("n2", "n2.1");
        Assert.Null(served.LastServed);
        Assert.Equal(dropped.Epoch, served.Epoch);
        Assert.Throws<InvalidOperationException>(() => dropped.MarkServed("n1", "n1.1"));
        Assert.Throws<InvalidOperationException>(() => dropped.MarkServed("n2", "n2.2")); // n2 restarted since it was promoted
        var legacy = new ReplicaSet(3, "n1", [new("n1", "p", ReplicaState.InSync)]);
        Assert.Equal("n1.1", legacy.MarkServed("n1", "n1.1").Find("n1")!.Boot);
    }

    [Fact]
    public void An_unserved_failover_is_undone_when_its_new_owner_dies_and_the_deposed_owner_is_back_on_the_same_boot()
    {
        var set = Three();
        var failedOver = set.FailOver(Boots(down: ["n1"]))!; // n1 cut off from the store, not crashed
        Assert.Equal(ReplicaState.Failed, failedOver.Find("n1")!.State);
        // n2 crashed before it served; n1 is back, same boot, and holds every acknowledged write.
        var back = failedOver.FailOver(Boots(restarted: ["n2"]));
        Assert.NotNull(back);
        Assert.Equal("n1", back.Owner);
        Assert.Equal(failedOver.Epoch + 1, back.Epoch);
        Assert.Equal(ReplicaState.InSync, back.Find("n1")!.State);
        Assert.Equal(ReplicaState.Failed, back.Find("n2")!.State); // restarted: its cache is gone
        Assert.Equal(ReplicaState.InSync, back.Find("n3")!.State);
        Assert.True(set.SameAs(back.LastServed)); // not served yet either
    }

    [Fact]
    public void An_unserved_failover_whose_deposed_owner_is_gone_too_chooses_again_from_the_set_that_last_served()
    {
        var set = Three();
        var failedOver = set.FailOver(Boots(down: ["n1"]))!;
        var again = failedOver.FailOver(Boots(down: ["n1", "n2"]));
        Assert.NotNull(again);
        Assert.Equal("n3", again.Owner);
        Assert.Equal(failedOver.Epoch + 1, again.Epoch);
        Assert.Equal(ReplicaState.InSync, again.Find("n2")!.State); // away, not known to have lost anything

        // Once n2 served, n1 is failed for good: writes acknowledged at n2's epoch never reached it.
        var served = failedOver.MarkServed("n2", "n2.1");
        var afterServing = served.FailOver(Boots(down: ["n2", "n3"]));
        Assert.Null(afterServing); // n3 is away and n1 failed: wait for n3
        Assert.Equal("n3", served.FailOver(Boots(down: ["n2"]))!.Owner);
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

namespace Cairn.Replication.Tests;

/// <summary>
/// A replica's history of what it received: the regions written since a given epoch (a generation may hold writes of
/// the next epoch, since its node sees epochs late), nothing when it does not reach back that far, and old
/// generations dropped once no failed replica can need them.
/// </summary>
public sealed class WriteHistoryTests
{
    private static ReplicaSet Set(ulong epoch, string owner = "n1", params ReplicaMember[] failed) =>
        new(epoch, owner, [new ReplicaMember(owner, "p", ReplicaState.InSync), new ReplicaMember("n2", "p", ReplicaState.InSync), .. failed]);

    private static ReplicaMember Failed(string node, ulong at) => new(node, "p", ReplicaState.Failed, at);

    private static IReadOnlyList<DirtyRange> Ranges(DirtyRegionMap? map) => Assert.IsType<DirtyRegionMap>(map).Ranges();

    [Fact]
    public void The_regions_since_an_epoch_include_the_generation_that_may_hold_its_first_writes()
    {
        var history = new WriteHistory(0, Set(1));
        history.Mark(0, 4096);                       // epoch 1
        history.Observe(Set(2, "n1", Failed("n3", 2)));
        history.Mark(8192, 4096);                    // epoch 2
        history.Observe(Set(3, "n1", Failed("n3", 2)));
        history.Mark(65536, 100);                    // epoch 3

        // A replica dropped at epoch 2 missed writes of epoch 2 that its node may have recorded before it saw epoch 2.
        Assert.Equal([new DirtyRange(0, 4096), new DirtyRange(8192, 4096), new DirtyRange(65536, 4096)], Ranges(history.Since(2)));
        Assert.Equal([new DirtyRange(8192, 4096), new DirtyRange(65536, 4096)], Ranges(history.Since(3)));
        Assert.Equal(3UL, history.Since(3)!.SinceEpoch);
    }

    [Fact]
    public void A_copy_opened_with_data_does_not_cover_the_epoch_it_was_opened_at()
    {
        var history = new WriteHistory(5, Set(4));
        history.Mark(0, 4096);

        Assert.Null(history.Since(4));
        Assert.Equal([new DirtyRange(0, 4096)], Ranges(history.Since(5)));
    }

    [Fact]
    public void Generations_no_failed_replica_needs_are_dropped_and_no_longer_answer()
    {
        var history = new WriteHistory(0, Set(1));
        history.Mark(0, 4096);
        history.Observe(Set(2));
        history.Mark(4096, 4096);
        history.Observe(Set(3)); // nobody failed: writes of epochs before 3 are needed by no one
        history.Mark(8192, 4096);

        Assert.Null(history.Since(1));
        Assert.Null(history.Since(2));
        Assert.Equal([new DirtyRange(4096, 8192)], Ranges(history.Since(3)));
    }

    [Fact]
    public void A_failed_replica_keeps_the_generations_it_needs()
    {
        var history = new WriteHistory(0, Set(1));
        history.Mark(0, 4096);
        history.Observe(Set(2, "n1", Failed("n3", 1)));
        history.Observe(Set(3, "n1", Failed("n3", 1)));
        history.Observe(Set(4, "n1", Failed("n3", 1)));

        Assert.Equal([new DirtyRange(0, 4096)], Ranges(history.Since(1)));
    }

    [Fact]
    public void Owners_seen_are_remembered()
    {
        var history = new WriteHistory(0, Set(1, "n1"));
        history.Observe(Set(2, "n4"));

        Assert.True(history.SawOwner("n1"));
        Assert.True(history.SawOwner("n4"));
        Assert.False(history.SawOwner("n2"));
    }

    [Fact]
    public async Task A_replica_target_records_what_it_carries_out_and_not_what_it_refuses()
    {
        var history = new WriteHistory(0, Set(3));
        var target = new ReplicaTarget("r", new Cairn.Testing.RamBlockDevice(1 << 20), null) { History = history };

        Assert.Equal(ReplicaStatus.Ok, await target.ExecuteAsync(new ReplicaRequest(ReplicaOp.Write, ReplicaFlags.None, 3, 1, 4096, 512), new byte[512], default, default));
        Assert.Equal(ReplicaStatus.Ok, await target.ExecuteAsync(new ReplicaRequest(ReplicaOp.Trim, ReplicaFlags.None, 3, 2, 65536, 8192), default, default, default));
        Assert.Equal(ReplicaStatus.Ok, await target.ExecuteAsync(new ReplicaRequest(ReplicaOp.Read, ReplicaFlags.None, 3, 3, 0, 4096), default, new byte[4096], default));
        Assert.Equal(ReplicaStatus.StaleEpoch, await target.ExecuteAsync(new ReplicaRequest(ReplicaOp.Write, ReplicaFlags.None, 2, 4, 0, 512), new byte[512], default, default));

        Assert.Equal([new DirtyRange(4096, 4096), new DirtyRange(65536, 8192)], Ranges(history.Since(3)));
    }

    [Fact]
    public async Task A_snapshot_change_or_revert_makes_the_history_refuse_replicas_that_left_before_it()
    {
        var history = new WriteHistory(0, Set(1));
        var control = new RecordingControl("r", () => [], []);
        var target = new ReplicaTarget("r", new Cairn.Testing.RamBlockDevice(1 << 20), control) { History = history };
        history.Observe(Set(2, "n1", Failed("n3", 1)));
        byte[] name = "s1"u8.ToArray();

        Assert.Equal(ReplicaStatus.Ok, await target.ExecuteAsync(new ReplicaRequest(ReplicaOp.CreateSnapshot, ReplicaFlags.None, 2, 1, 0, 2), name, default, default));
        history.Observe(Set(3, "n1", Failed("n3", 1)));
        history.Mark(0, 4096);

        Assert.Null(history.Since(1));  // n3 left before the snapshot: it would come back without it
        Assert.Null(history.Since(2));  // the snapshot may have been taken at epoch 3, seen late
        Assert.Equal([new DirtyRange(0, 4096)], Ranges(history.Since(4)));
    }
}

using Cairn.Core;
using Cairn.Testing;
using static Cairn.Replication.Tests.TestData;

namespace Cairn.Replication.Tests;

/// <summary>
/// Growing a replicated volume and taking or deleting its snapshots: remotes first, then the local replica;
/// snapshots quiesce the volume so every replica's snapshot holds the same acknowledged writes; a remote that fails
/// is dropped like on a write.
/// </summary>
public sealed class VolumeControlTests
{
    private const long Size = 1 << 20;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private sealed record Replica(RamBlockDevice Device, RecordingControl? Control, IReplicaChannel Channel);

    private static (ReplicatedVolume Volume, RamBlockDevice Local, Replica[] Remotes, InSyncSet Set, List<string> Log) Build(bool[] withControl,
        Func<IReplicaChannel, IReplicaChannel>? wrapFirst = null)
    {
        var log = new List<string>();
        var remotes = withControl.Select((control, i) =>
        {
            var device = new RamBlockDevice(Size);
            var recording = control ? new RecordingControl($"r{i}", () => device.Data.ToArray(), log) : null;
            IReplicaChannel channel = new DirectChannel(new ReplicaTarget($"r{i}", device, recording), 1);
            return new Replica(device, recording, i == 0 && wrapFirst is not null ? wrapFirst(channel) : channel);
        }).ToArray();
        var set = new InSyncSet(1, [.. remotes.Select(r => r.Channel.Replica)]);
        var local = new RamBlockDevice(Size);
        return (new ReplicatedVolume(local, remotes.Select(r => r.Channel), 1, set), local, remotes, set, log);
    }

    [Fact]
    public async Task Growing_reaches_every_remote_before_the_local_replica()
    {
        var (volume, _, _, _, log) = Build([true, true]);
        using var _ = volume;

        await volume.GrowAsync(2 * Size, () =>
        {
            log.Add("local grow");
            return ValueTask.CompletedTask;
        });

        Assert.Equal(["local grow"], log[^1..]);
        Assert.Equal(["r0 grow 2097152", "r1 grow 2097152"], log[..^1].Order());
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => volume.GrowAsync(Size / 2, () => ValueTask.CompletedTask));
    }

    [Fact]
    public async Task A_remote_that_cannot_grow_is_dropped_before_the_local_replica_grows()
    {
        var (volume, _, _, set, _) = Build([true, false]);
        using var _ = volume;
        ulong epochWhenLocalGrew = 0;

        await volume.GrowAsync(2 * Size, () =>
        {
            epochWhenLocalGrew = set.Epoch;
            return ValueTask.CompletedTask;
        });

        Assert.Equal(["r0"], volume.InSyncReplicas);
        Assert.Equal(2UL, epochWhenLocalGrew);
    }

    [Fact]
    public async Task A_snapshot_waits_for_writes_in_flight_holds_new_ones_and_is_the_same_on_every_replica()
    {
        HoldFirstWriteChannel? held = null;
        var (volume, local, remotes, _, log) = Build([true, true], c => held = new HoldFirstWriteChannel(c));
        using var _ = volume;
        byte[]? localImage = null;

        var before = volume.WriteAsync(0, Pattern(4096, 1)).AsTask(); // in flight: r0 has not answered
        await held!.Reached.Task.WaitAsync(Deadline);
        var snapshot = volume.CreateSnapshotAsync("s1", () =>
        {
            localImage = local.Data.ToArray();
            log.Add("local snapshot s1");
            return ValueTask.CompletedTask;
        });
        var after = volume.WriteAsync(4096, Pattern(4096, 2)).AsTask(); // issued once the snapshot began: held back
        Assert.False(snapshot.IsCompleted, "the snapshot did not wait for the write in flight");
        Assert.False(after.IsCompleted, "a write went on while the snapshot quiesced the volume");

        held.Release.SetResult();
        await Task.WhenAll(before, snapshot, after).WaitAsync(Deadline);

        Assert.Equal("local snapshot s1", log[^1]); // the remotes first
        byte[] expected = new byte[Size];
        Pattern(4096, 1).CopyTo(expected, 0);
        Assert.Equal(expected, localImage);
        foreach (var remote in remotes)
        {
            Assert.Equal(expected, remote.Control!.Snapshots["s1"]);
            Assert.True(remote.Device.Flushes >= 1, "a remote was not flushed before its snapshot");
            Assert.Equal(Pattern(4096, 2), remote.Device.Data.Slice(4096, 4096).ToArray()); // and the held write went on after
        }
        Assert.True(local.Flushes >= 1);
    }

    [Fact]
    public async Task A_remote_that_fails_the_snapshot_is_dropped_and_writes_go_on()
    {
        var (volume, _, remotes, set, _) = Build([true, false]);
        using var _ = volume;

        await volume.CreateSnapshotAsync("s1", () => ValueTask.CompletedTask);
        await volume.WriteAsync(0, Pattern(4096, 1));

        Assert.Equal(["r0"], volume.InSyncReplicas);
        Assert.Equal(["r0"], set.Replicas);
        Assert.Contains("s1", remotes[0].Control!.Snapshots.Keys);
        Assert.Null(volume.DirtySince("r1")); // it lacks s1: a delta would bring it back without it, so only a full copy will do
    }

    [Fact]
    public async Task Deleting_a_snapshot_reaches_every_remote_then_the_local_replica()
    {
        var (volume, _, remotes, _, log) = Build([true, true]);
        using var _ = volume;
        await volume.CreateSnapshotAsync("s1", () => ValueTask.CompletedTask);

        await volume.DeleteSnapshotAsync("s1", () =>
        {
            log.Add("local delete s1");
            return ValueTask.CompletedTask;
        });

        Assert.All(remotes, r => Assert.Empty(r.Control!.Snapshots));
        Assert.Equal("local delete s1", log[^1]);
        Assert.Equal(["r0", "r1"], volume.InSyncReplicas);
        await Assert.ThrowsAsync<ArgumentException>(() => volume.CreateSnapshotAsync(new string('x', 256), () => ValueTask.CompletedTask));
        await Assert.ThrowsAsync<ArgumentException>(() => volume.DeleteSnapshotAsync("", () => ValueTask.CompletedTask));
    }

    [Fact]
    public async Task A_fenced_owner_takes_no_snapshot()
    {
        var (volume, _, remotes, set, _) = Build([true, false]);
        using var _ = volume;
        set.Epoch = 9; // r1 fails the snapshot; dropping it finds another owner
        bool local = false;

        var failure = await Assert.ThrowsAsync<BlockDeviceException>(() => volume.CreateSnapshotAsync("s1", () =>
        {
            local = true;
            return ValueTask.CompletedTask;
        }));

        Assert.Equal(BlockError.Shutdown, failure.Error);
        Assert.False(local);
        Assert.Contains("s1", remotes[0].Control!.Snapshots.Keys); // a remote may hold it: the caller deletes it once ownership settles
        await Assert.ThrowsAsync<BlockDeviceException>(async () => await volume.WriteAsync(0, Pattern(512, 1)));
    }

    [Fact]
    public async Task A_replica_being_rebuilt_is_grown_to_the_volume_first_and_follows_later_grows()
    {
        var (volume, _, _, _, log) = Build([true]);
        using var _ = volume;
        var device = new RamBlockDevice(Size);
        var control = new RecordingControl("r9", () => [], log);
        var held = new HoldFirstWriteChannel(new DirectChannel(new ReplicaTarget("r9", device, control), 1));
        await volume.WriteAsync(0, Pattern(4096, 1)); // something to copy

        var rebuild = volume.RebuildAsync(held, delta: false);
        await held.Reached.Task.WaitAsync(Deadline); // copying
        var grow = volume.GrowAsync(Size, () => ValueTask.CompletedTask); // the same size: a no-op for the devices, not for the log
        held.Release.SetResult();
        await Task.WhenAll(rebuild, grow).WaitAsync(Deadline);

        Assert.Equal(["r9 delete all", $"r9 grow {Size}"], log[..2]); // before anything was copied (the owner has no snapshots to give it)
        Assert.Equal([$"r0 grow {Size}", $"r9 grow {Size}"], log[2..].Order()); // then with the in-sync replica
        Assert.Equal(["r0", "r9"], volume.InSyncReplicas);
    }
}

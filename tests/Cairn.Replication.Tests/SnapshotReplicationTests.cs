using Cairn.Core;
using Cairn.Testing;
using static Cairn.Replication.Tests.TestData;

namespace Cairn.Replication.Tests;

/// <summary>
/// Snapshots stay the same on every replica beyond taking them: a full rebuild recreates the owner's snapshots on
/// the new replica first, a snapshot change sends a rebuild under way back to the start and turns a dropped
/// replica's delta into a full copy, and a revert leaves each remote reverted too (then resynced from what comes
/// next) or marked for a full copy.
/// </summary>
public sealed class SnapshotReplicationTests
{
    private const long Size = 4 << 20;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    /// <summary>The owner's snapshots as the pool would give them: frozen copies of the local device, oldest first.</summary>
    private sealed class Images(RamBlockDevice local) : ISnapshotImages
    {
        private readonly List<SnapshotImage> _images = [];

        public IReadOnlyList<SnapshotImage> List()
        {
            lock (_images)
            {
                return [.. _images];
            }
        }

        /// <summary>Mending is <see cref="SnapshotRepairTests"/>' business; these tests never scrub.</summary>
        public SnapshotRewrite RewriteBlock(string name, long offsetBytes, ReadOnlySpan<byte> block) =>
            throw new NotSupportedException("these images have no checksums to mend against");

        public byte[] Content(string name) => ((RamBlockDevice)List().Single(i => i.Name == name).Image).Data.ToArray();

        /// <summary>The local snapshot step of <see cref="ReplicatedVolume.CreateSnapshotAsync"/>.</summary>
        public Func<ValueTask> Take(string name) => () =>
        {
            var frozen = new RamBlockDevice(local.SizeBytes);
            for (long page = 0; page < local.SizeBytes; page += RamBlockDevice.PageBytes)
            {
                switch (local.PageState(page))
                {
                    case AllocationState.Data:
                        frozen.WriteAsync(page, local.Data.Slice((int)page, RamBlockDevice.PageBytes).ToArray()).AsTask().GetAwaiter().GetResult();
                        break;
                    case AllocationState.Zero:
                        frozen.WriteZeroesAsync(page, RamBlockDevice.PageBytes, ZeroFlags.NoHole).AsTask().GetAwaiter().GetResult();
                        break;
                }
            }
            lock (_images)
            {
                _images.Add(new SnapshotImage(name, frozen));
            }
            return ValueTask.CompletedTask;
        };

        public Func<ValueTask> Delete(string name) => () =>
        {
            lock (_images)
            {
                _images.RemoveAll(i => i.Name == name);
            }
            return ValueTask.CompletedTask;
        };
    }

    private sealed record Remote(RamBlockDevice Device, RecordingControl Control)
    {
        public ReplicaTarget Target(string name) => new(name, Device, Control);
    }

    private static Remote NewRemote(string name, List<string> log, bool canRevert = true)
    {
        var device = new RamBlockDevice(Size);
        var control = new RecordingControl(name, () => device.Data.ToArray(), log,
            canRevert ? content => device.WriteAsync(0, content).AsTask().GetAwaiter().GetResult() : null);
        return new Remote(device, control);
    }

    private static (ReplicatedVolume Volume, RamBlockDevice Local, Images Images) NewOwner(params IReplicaChannel[] remotes)
    {
        var local = new RamBlockDevice(Size);
        var images = new Images(local);
        var volume = new ReplicatedVolume(local, remotes, 1, new InSyncSet(1, [.. remotes.Select(r => r.Replica)])) { Snapshots = images };
        return (volume, local, images);
    }

    private static async Task WriteHistoryAsync(ReplicatedVolume volume, Images images)
    {
        await volume.WriteAsync(0, Pattern(1 << 20, 1));
        await volume.CreateSnapshotAsync("s1", images.Take("s1"));
        await volume.WriteAsync(65536, Pattern(65536, 2));
        await volume.TrimAsync(512 << 10, 128 << 10);
        await volume.WriteZeroesAsync(2 << 20, 8192, ZeroFlags.NoHole);
        await volume.CreateSnapshotAsync("s2", images.Take("s2"));
        await volume.WriteAsync(3 << 20, Pattern(65536, 3));
    }

    [Fact]
    public async Task A_full_rebuild_recreates_the_owners_snapshots_in_order_and_deletes_stale_ones()
    {
        var (volume, local, images) = NewOwner();
        using var _ = volume;
        await WriteHistoryAsync(volume, images);
        var log = new List<string>();
        var remote = NewRemote("r1", log);
        remote.Control.Snapshots["gone"] = [1, 2, 3]; // a returning replica's snapshot the owner no longer has
        await remote.Device.WriteAsync(0, Pattern((int)Size, 9));

        await volume.RebuildAsync(new DirectChannel(remote.Target("r1"), 1), delta: false).WaitAsync(Deadline);

        Assert.Equal(["r1"], volume.InSyncReplicas);
        Assert.Equal(["s1", "s2"], remote.Control.Snapshots.Keys.Order());
        Assert.Equal(images.Content("s1"), remote.Control.Snapshots["s1"]);
        Assert.Equal(images.Content("s2"), remote.Control.Snapshots["s2"]);
        Assert.Equal(local.Data.ToArray(), remote.Device.Data.ToArray());
        Assert.Equal(["r1 delete all", "r1 grow 4194304", "r1 snapshot s1", "r1 snapshot s2", "r1 grow 4194304"], log); // then the live copy
    }

    [Fact]
    public async Task A_delta_rebuild_leaves_the_replicas_snapshots_alone()
    {
        var log = new List<string>();
        var remote = NewRemote("r1", log);
        var channel = new DirectChannel(remote.Target("r1"), 1);
        var (volume, local, images) = NewOwner(channel);
        using var _ = volume;
        await WriteHistoryAsync(volume, images);
        channel.Unreachable = true;
        await volume.WriteAsync(0, Pattern(4096, 7)); // drops r1
        channel.Unreachable = false;
        log.Clear();

        await volume.RebuildAsync(channel, delta: true).WaitAsync(Deadline);

        Assert.Equal(["r1 grow 4194304"], log); // no snapshot deleted or taken
        Assert.Equal(["s1", "s2"], remote.Control.Snapshots.Keys.Order());
        Assert.Equal(local.Data.ToArray(), remote.Device.Data.ToArray());
    }

    [Fact]
    public async Task A_snapshot_taken_while_a_replica_is_rebuilt_sends_the_rebuild_back_to_the_start()
    {
        var (volume, local, images) = NewOwner();
        using var _ = volume;
        await volume.WriteAsync(0, Pattern(2 << 20, 1));
        var log = new List<string>();
        var remote = NewRemote("r1", log);
        var held = new HoldFirstWriteChannel(new DirectChannel(remote.Target("r1"), 1)); // the live copy's first write

        var rebuild = volume.RebuildAsync(held, delta: false);
        await held.Reached.Task.WaitAsync(Deadline);
        await volume.CreateSnapshotAsync("s1", images.Take("s1")).WaitAsync(Deadline);
        held.Release.SetResult();

        var failure = await Assert.ThrowsAsync<ReplicaRebuildException>(() => rebuild.WaitAsync(Deadline));
        Assert.Contains("snapshot s1", failure.Message, StringComparison.Ordinal);
        Assert.Empty(volume.InSyncReplicas);
        Assert.Empty(remote.Control.Snapshots);

        await volume.RebuildAsync(new DirectChannel(remote.Target("r1"), 1), delta: false).WaitAsync(Deadline);
        Assert.Equal(["s1"], remote.Control.Snapshots.Keys);
        Assert.Equal(images.Content("s1"), remote.Control.Snapshots["s1"]);
        Assert.Equal(local.Data.ToArray(), remote.Device.Data.ToArray());
    }

    [Fact]
    public async Task A_snapshot_taken_while_snapshots_are_copied_makes_the_rebuild_start_over()
    {
        var (volume, _, images) = NewOwner();
        using var _ = volume;
        await WriteHistoryAsync(volume, images);
        var log = new List<string>();
        var remote = NewRemote("r1", log);
        var held = new HoldFirstWriteChannel(new DirectChannel(remote.Target("r1"), 1)); // the first write copies snapshot s1

        var rebuild = volume.RebuildAsync(held, delta: false);
        await held.Reached.Task.WaitAsync(Deadline);
        Assert.DoesNotContain("r1 snapshot s1", log);
        await volume.CreateSnapshotAsync("s3", images.Take("s3")).WaitAsync(Deadline);
        held.Release.SetResult();

        var failure = await Assert.ThrowsAsync<ReplicaRebuildException>(() => rebuild.WaitAsync(Deadline));
        Assert.Contains("snapshots of the volume changed", failure.Message, StringComparison.Ordinal);
        Assert.Empty(volume.InSyncReplicas);

        await volume.RebuildAsync(new DirectChannel(remote.Target("r1"), 1), delta: false).WaitAsync(Deadline);
        Assert.Equal(["s1", "s2", "s3"], remote.Control.Snapshots.Keys.Order());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_snapshot_change_while_a_replica_is_out_turns_its_delta_into_a_full_copy(bool create)
    {
        var log = new List<string>();
        var channel = new DirectChannel(NewRemote("r1", log).Target("r1"), 1);
        var (volume, _, images) = NewOwner(channel);
        using var _ = volume;
        await volume.CreateSnapshotAsync("s1", images.Take("s1"));
        channel.Unreachable = true;
        await volume.WriteAsync(0, Pattern(4096, 1)); // drops r1
        Assert.NotNull(volume.DirtySince("r1"));

        await (create ? volume.CreateSnapshotAsync("s2", images.Take("s2")) : volume.DeleteSnapshotAsync("s1", images.Delete("s1")));

        Assert.Null(volume.DirtySince("r1")); // it would come back with other snapshots than the owner's
        await Assert.ThrowsAsync<InvalidOperationException>(() => volume.RebuildAsync(channel, delta: true));
    }

    [Fact]
    public async Task A_revert_reverts_every_remote_which_then_needs_only_what_is_written_after_it()
    {
        var log = new List<string>();
        var remotes = new[] { NewRemote("r0", log), NewRemote("r1", log) };
        var set = new InSyncSet(1, "r0", "r1");
        var local = new RamBlockDevice(Size);
        var images = new Images(local);
        using var volume = new ReplicatedVolume(local, remotes.Select((r, i) => new DirectChannel(r.Target($"r{i}"), 1)), 1, set) { Snapshots = images };
        await WriteHistoryAsync(volume, images);
        byte[] s1 = images.Content("s1");

        await volume.RevertAsync("s1", () =>
        {
            s1.CopyTo(local.Data);
            return ValueTask.CompletedTask;
        }).WaitAsync(Deadline);

        Assert.Equal((2UL, 2UL), (volume.Epoch, set.Epoch)); // the remotes left the in-sync set before anything reverted
        Assert.Empty(volume.InSyncReplicas);
        foreach (var remote in remotes)
        {
            Assert.Equal(s1, remote.Device.Data.ToArray());
        }
        Assert.True(volume.DirtySince("r0")!.IsEmpty);

        await volume.WriteAsync(8192, Pattern(4096, 5));
        foreach (var (remote, i) in remotes.Select((r, i) => (r, i)))
        {
            var counting = new CountingChannel(new DirectChannel(remote.Target($"r{i}"), 2));
            await volume.RebuildAsync(counting, delta: true).WaitAsync(Deadline);
            Assert.Equal((4096L, 0L), (counting.WrittenBytes, counting.ErasedBytes));
            Assert.Equal(local.Data.ToArray(), remote.Device.Data.ToArray());
        }
        Assert.Equal(["r0", "r1"], volume.InSyncReplicas.Order());
    }

    [Fact]
    public async Task A_remote_that_cannot_revert_is_left_for_a_full_copy()
    {
        var log = new List<string>();
        var remote = NewRemote("r0", log, canRevert: false);
        var (volume, local, images) = NewOwner(new DirectChannel(remote.Target("r0"), 1));
        using var _ = volume;
        await WriteHistoryAsync(volume, images);

        await volume.RevertAsync("s2", () =>
        {
            images.Content("s2").CopyTo(local.Data);
            return ValueTask.CompletedTask;
        }).WaitAsync(Deadline);

        Assert.Empty(volume.InSyncReplicas);
        Assert.Null(volume.DirtySince("r0"));
        Assert.Equal(images.Content("s2"), local.Data.ToArray());
    }
}

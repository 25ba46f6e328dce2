using System.Net;
using System.Text.Json;
using Cairn.BlockStore;
using Cairn.ClusterStore;
using Cairn.ControlPlane.Replication;
using Cairn.Core;
using Cairn.Replication;
using Cairn.Testing;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// Scrub of a replicated volume on its owner, with bit rot planted in the pools' data files: the owner's bad blocks are
/// rewritten from an in-sync replica with a good copy (its snapshots' mended in place from the replica's copy of the
/// same snapshot), the replicas' bad blocks from the owner's, client reads of a bad
/// block are served and healed from a replica, a repair never overwrites a client's write, and a block with no good
/// copy anywhere is reported unrecoverable and left alone. Three real block pools on disk, the two replicas served by
/// real replica servers over loopback TCP, the in-sync set in a real cluster store.
/// </summary>
public sealed class ScrubRepairTests
{
    private const int Block = 4096;
    private const int Blocks = 32;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    /// <summary>Distinct content for every block, so each is found exactly once in a data file.</summary>
    private static byte[] Content(int block, int version = 0)
    {
        byte[] data = new byte[Block];
        new Random(1000 * version + block).NextBytes(data);
        return data;
    }

    [Fact]
    public async Task A_bad_block_on_the_owner_is_rewritten_from_a_replica_and_reported_and_a_second_scrub_finds_nothing()
    {
        await using var c = await Copies.StartAsync();
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(5)));
        await AssertBadAsync(c.Volumes[0], 5);

        var report = await c.ScrubAsync();

        Assert.Equal((1L, 1L, 0L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        var error = Assert.Single(report.Errors);
        Assert.Equal(("vol-1", 5L * Block, "n1", "checksum mismatch"), (error.Device, error.OffsetBytes, error.Node, error.Problem));
        Assert.Equal("repaired: rewritten from the copy on n2", error.Repair);
        Assert.Equal(3L * Blocks, report.BlocksChecked); // the owner's blocks, then each replica's, verified on its node
        Assert.Contains(c.Log.Lines, line => line.Contains("bad block at byte 20480 on n1: repaired: rewritten from the copy on n2", StringComparison.Ordinal));
        await AssertAllReadBackAsync(c);

        var again = await c.ScrubAsync();
        Assert.Equal((0L, 0L), (again.ErrorCount, again.RepairedCount));
        Assert.Empty(again.Errors);
    }

    [Fact]
    public async Task When_the_first_replica_s_copy_is_bad_too_the_owner_takes_the_next_and_then_rewrites_the_first_from_its_own()
    {
        await using var c = await Copies.StartAsync();
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(11)));
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(1), Content(11)));

        var report = await c.ScrubAsync();

        Assert.Equal((2L, 2L, 0L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        Assert.Equal(new (string?, long, string?)[]
        {
            ("n1", 11L * Block, "repaired: rewritten from the copy on n3"),
            ("n2", 11L * Block, "repaired: rewritten from the owner's copy"),
        }, report.Errors.Select(e => (e.Node, e.OffsetBytes, e.Repair)));
        Assert.Null(report.Errors[1].PhysicalBlock); // only the replica's node knows where it lies
        await AssertAllReadBackAsync(c);
        Assert.Equal(0, (await c.ScrubAsync()).ErrorCount);
    }

    [Fact]
    public async Task A_block_bad_on_every_copy_is_reported_unrecoverable_and_nothing_is_changed()
    {
        await using var c = await Copies.StartAsync();
        for (int node = 0; node < 3; node++)
        {
            Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(node), Content(7)));
        }
        var before = Enumerable.Range(0, 3).Select(n => DataFileCorruption.Snapshot(c.PoolDirectory(n))).ToArray();

        var report = await c.ScrubAsync();

        Assert.Equal((3L, 0L, 3L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        Assert.Equal(new (string?, string?)[]
        {
            ("n1", "unrecoverable: no in-sync replica has a good copy (n2: its copy fails too; n3: its copy fails too)"),
            ("n2", "unrecoverable: the owner's copy fails too: no good copy to rewrite it from"),
            ("n3", "unrecoverable: the owner's copy fails too: no good copy to rewrite it from"),
        }, report.Errors.Select(e => (e.Node, e.Repair)));
        Assert.All(report.Errors, e => Assert.Equal(7L * Block, e.OffsetBytes));
        for (int node = 0; node < 3; node++)
        {
            Assert.Equal(before[node], DataFileCorruption.Snapshot(c.PoolDirectory(node)));
            await AssertBadAsync(c.Volumes[node], 7);
        }
        Assert.Equal(["n2", "n3"], c.Owner.InSyncReplicas); // a bad block is no reason to drop a replica
        Assert.Equal(3, (await c.ScrubAsync()).UnrecoverableCount);
    }

    [Fact]
    public async Task A_client_read_of_a_bad_block_on_the_owner_is_served_from_a_replica_and_heals_the_owner_s_copy()
    {
        await using var c = await Copies.StartAsync();
        var repairs = new List<BlockRepair>();
        c.Owner.ReadRepaired += repairs.Add;
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(9)));

        byte[] read = new byte[3 * Block];
        await c.Owner.ReadAsync(8 * Block, read); // blocks 8, 9 and 10: only 9 is bad

        Assert.Equal([.. Content(8), .. Content(9), .. Content(10)], read);
        Assert.Equal([new BlockRepair(null, 9L * Block, BlockRepairOutcome.Repaired, "rewritten from the copy on n2")], repairs);
        Assert.Equal(Content(9), await ReadAsync(c.Volumes[0], 9)); // the owner's own copy is good again
        Assert.Equal(0, (await c.ScrubAsync()).ErrorCount);
    }

    [Fact]
    public async Task A_client_write_to_a_block_being_repaired_waits_for_the_repair_and_is_never_overwritten_by_it()
    {
        HoldAfterReadChannel? held = null;
        await using var c = await Copies.StartAsync(first => held = new HoldAfterReadChannel(first));
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(3)));

        var scrub = Task.Run(c.ScrubAsync);
        await held!.Reached.Task.WaitAsync(Deadline); // the repair holds n2's good (and, so far, current) copy of block 3
        var write = c.Owner.WriteAsync(3 * Block, Content(3, version: 1)).AsTask();
        held.Release.SetResult();
        await write.WaitAsync(Deadline);
        var report = await scrub.WaitAsync(Deadline);

        Assert.Equal("repaired: rewritten from the copy on n2", Assert.Single(report.Errors).Repair);
        for (int node = 0; node < 3; node++)
        {
            Assert.Equal(Content(3, version: 1), await ReadAsync(c.Volumes[node], 3)); // the write landed after the repair, everywhere
        }
    }

    [Fact]
    public async Task A_replica_that_refuses_the_rewrite_of_its_bad_block_leaves_the_in_sync_set_with_the_block_recorded_for_its_resync()
    {
        RefuseWritesChannel? refusing = null;
        await using var c = await Copies.StartAsync(first => refusing = new RefuseWritesChannel(first));
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(1), Content(20)));
        refusing!.Refuse = true; // n2's drive now fails every write

        var report = await c.ScrubAsync();

        var error = Assert.Single(report.Errors);
        Assert.Equal((1L, 0L, 1L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        Assert.Equal(("n2", 20L * Block), (error.Node, error.OffsetBytes));
        Assert.Equal("unrecoverable: the replica answered Io to the rewrite and left the in-sync set; its resync will rewrite the block", error.Repair);
        Assert.Equal(["n3"], c.Owner.InSyncReplicas);
        Assert.Equal([new DirtyRange(20L * Block, Block)], c.Owner.DirtySince("n2")!.Ranges());
        Assert.Equal(ReplicaState.Failed, (await c.StoredSetAsync()).Find("n2")!.State); // dropped in the cluster store, epoch bumped
    }

    [Fact]
    public async Task A_bad_block_only_a_snapshot_holds_and_one_it_shares_with_the_volume_are_mended_in_place_from_a_replica_s_snapshot()
    {
        await using var c = await Copies.StartAsync();
        await c.SnapshotAsync("s1");
        await c.Owner.WriteAsync(4 * Block, Content(4, version: 1)); // block 4's old content: now the snapshot's alone
        await c.Owner.FlushAsync();
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(4)));
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(6))); // the snapshot's and the volume's
        long usedBefore = c.Pools[0].UsedBytes;

        var report = await c.ScrubAsync();

        Assert.Equal((2L, 2L, 0L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        Assert.Equal(new (string, long, string?, string?)[]
        {
            ("vol-1@s1", 4L * Block, "n1", "repaired: rewritten from the copy on n2"),
            ("vol-1@s1", 6L * Block, "n1", "repaired: rewritten from the copy on n2"),
        }, report.Errors.Select(e => (e.Device, e.OffsetBytes, e.Node, e.Repair)));
        Assert.Equal(33L + 2 * 32 + 2 * 32, report.BlocksChecked); // the snapshot's 32 and the volume's own block 4, then each replica's live copy and snapshot
        Assert.Contains(c.Log.Lines, line => line.Contains("bad block at byte 16384 of snapshot s1 on n1: repaired: rewritten from the copy on n2", StringComparison.Ordinal));
        Assert.Equal(usedBefore, c.Pools[0].UsedBytes); // mended in place: the volume still shares block 6 with the snapshot
        for (int block = 0; block < Blocks; block++)
        {
            Assert.Equal(Content(block), await ReadAsync(c.Snapshot(0, "s1"), block));
            Assert.Equal(Content(block, version: block == 4 ? 1 : 0), await ReadAsync(c.Volumes[0], block));
        }
        Assert.Equal(0, (await c.ScrubAsync()).ErrorCount);
    }

    [Fact]
    public async Task A_shared_block_no_replica_s_snapshot_can_mend_stays_bad_in_the_snapshot_while_the_volume_s_copy_is_rewritten()
    {
        await using var c = await Copies.StartAsync();
        await c.SnapshotAsync("s1");
        c.Pools[1].DeleteSnapshot("vol-1", "s1"); // the replicas lost their snapshot: only their live copies can help
        c.Pools[2].DeleteSnapshot("vol-1", "s1");
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(0), Content(6)));

        var report = await c.ScrubAsync();

        Assert.Equal((1L, 0L, 1L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        var error = Assert.Single(report.Errors);
        Assert.Equal(("vol-1@s1", 6L * Block), (error.Device, error.OffsetBytes));
        Assert.Equal("unrecoverable: no in-sync replica has a good copy (n2: it holds no snapshot named s1; n3: it holds no snapshot named s1); "
            + "the volume's copy: repaired: rewritten from the copy on n2", error.Repair);
        Assert.Equal(Content(6), await ReadAsync(c.Volumes[0], 6));
        await AssertBadAsync(c.Snapshot(0, "s1"), 6);
        Assert.Equal(["n2", "n3"], c.Owner.InSyncReplicas);
    }

    /// <summary>
    /// A block only the replicas' snapshot holds rots on one replica: the owner's scrub verifies each replica's copy of
    /// its snapshots on that replica's node and mends the bad block in place from its own copy of the snapshot.
    /// </summary>
    [Fact]
    public async Task A_bad_block_of_a_replica_s_snapshot_is_found_on_its_node_and_mended_in_place_from_the_owner_s_snapshot()
    {
        await using var c = await Copies.StartAsync();
        await c.SnapshotAsync("s1");
        await c.Owner.WriteAsync(4 * Block, Content(4, version: 1)); // block 4's old content: now the snapshots' alone
        await c.Owner.FlushAsync();
        Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(2), Content(4)));
        await AssertBadAsync(c.Snapshot(2, "s1"), 4);
        long usedBefore = c.Pools[2].UsedBytes;

        var report = await c.ScrubAsync();

        Assert.Equal((1L, 1L, 0L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        var error = Assert.Single(report.Errors);
        Assert.Equal(("vol-1@s1", 4L * Block, "n3", "repaired: rewritten from the owner's copy"), (error.Device, error.OffsetBytes, error.Node, error.Repair));
        Assert.Contains(c.Log.Lines, line => line.Contains("bad block at byte 16384 of snapshot s1 on n3: repaired: rewritten from the owner's copy", StringComparison.Ordinal));
        Assert.Equal(usedBefore, c.Pools[2].UsedBytes); // in place: no block allocated
        for (int block = 0; block < Blocks; block++)
        {
            Assert.Equal(Content(block), await ReadAsync(c.Snapshot(2, "s1"), block));
        }
        Assert.Equal(["n2", "n3"], c.Owner.InSyncReplicas);
        Assert.Equal(0, (await c.ScrubAsync()).ErrorCount);
    }

    [Fact]
    public async Task A_snapshot_block_bad_on_every_copy_is_reported_unrecoverable_and_nothing_is_changed()
    {
        await using var c = await Copies.StartAsync();
        await c.SnapshotAsync("s1");
        await c.Owner.WriteAsync(4 * Block, Content(4, version: 1));
        await c.Owner.FlushAsync();
        for (int node = 0; node < 3; node++)
        {
            Assert.Equal(1, DataFileCorruption.CorruptBlock(c.PoolDirectory(node), Content(4)));
        }
        var before = Enumerable.Range(0, 3).Select(n => DataFileCorruption.Snapshot(c.PoolDirectory(n))).ToArray();

        var report = await c.ScrubAsync();

        Assert.Equal((3L, 0L, 3L), (report.ErrorCount, report.RepairedCount, report.UnrecoverableCount));
        Assert.Equal(new (string, string?, string?)[]
        {
            ("vol-1@s1", "n1", "unrecoverable: no in-sync replica has a good copy (n2: its copy fails too; n3: its copy fails too)"),
            ("vol-1@s1", "n2", "unrecoverable: the owner's copy fails too: no good copy to rewrite it from (the owner's scrub mends its own first)"),
            ("vol-1@s1", "n3", "unrecoverable: the owner's copy fails too: no good copy to rewrite it from (the owner's scrub mends its own first)"),
        }, report.Errors.Select(e => (e.Device, e.Node, e.Repair)));
        for (int node = 0; node < 3; node++)
        {
            Assert.Equal(before[node], DataFileCorruption.Snapshot(c.PoolDirectory(node)));
            await AssertBadAsync(c.Snapshot(node, "s1"), 4);
        }
        Assert.Equal(["n2", "n3"], c.Owner.InSyncReplicas);
    }

    private static async Task<byte[]> ReadAsync(IBlockDevice device, int block)
    {
        byte[] data = new byte[Block];
        await device.ReadAsync((long)block * Block, data);
        return data;
    }

    private static async Task AssertBadAsync(IBlockDevice device, int block)
    {
        var failed = await Assert.ThrowsAsync<BlockDeviceException>(() => ReadAsync(device, block));
        Assert.Equal(BlockError.Io, failed.Error);
    }

    private static async Task AssertAllReadBackAsync(Copies c)
    {
        for (int node = 0; node < 3; node++)
        {
            for (int block = 0; block < Blocks; block++)
            {
                Assert.Equal(Content(block), await ReadAsync(c.Volumes[node], block));
            }
        }
    }

    /// <summary>
    /// Three copies of volume "db" (id vol-1) as nodes n1 (the owner), n2 and n3 hold them, each written with
    /// <see cref="Blocks"/> blocks of <see cref="Content"/> through the owner.
    /// </summary>
    private sealed class Copies : IAsyncDisposable
    {
        private const long Size = 4L << 20;
        private readonly string _root = Path.Combine(Path.GetTempPath(), "cairn-scrub-repair-" + Guid.NewGuid().ToString("N"));
        private readonly List<ReplicaServer> _servers = [];
        private readonly List<ReplicaLink> _links = [];
        private EmbeddedClusterStore? _store;

        public List<BlockPool> Pools { get; } = [];

        public List<StoredVolume> Volumes { get; } = [];

        public ReplicatedVolume Owner { get; private set; } = null!;

        public ListLogger Log { get; } = new();

        public string PoolDirectory(int node) => Path.Combine(_root, $"n{node + 1}");

        /// <param name="wrapFirst">Wraps the owner's channel to n2 (the first replica it reads from).</param>
        public static async Task<Copies> StartAsync(Func<IReplicaChannel, IReplicaChannel>? wrapFirst = null)
        {
            var c = new Copies();
            try
            {
                await c.OpenAsync(wrapFirst ?? (channel => channel));
                return c;
            }
            catch
            {
                await c.DisposeAsync();
                throw;
            }
        }

        private async Task OpenAsync(Func<IReplicaChannel, IReplicaChannel> wrapFirst)
        {
            for (int node = 0; node < 3; node++)
            {
                var pool = BlockPool.Create(PoolDirectory(node), "p", 64L << 20);
                Pools.Add(pool);
                Volumes.Add(pool.CreateVolume("vol-1", Size));
            }
            var set = ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")], _ => null);
            _store = EmbeddedClusterStore.Open(Path.Combine(_root, "store"));
            var spec = new VolumeSpec("db", "vol-1", Size, "p", DateTimeOffset.UtcNow, "n1", Replication: set);
            await _store.PutAsync(ClusterKeys.Volumes + "db", JsonSerializer.SerializeToUtf8Bytes(spec, ControlPlaneJson.Default.VolumeSpec));
            var channels = new List<IReplicaChannel>();
            for (int node = 1; node < 3; node++)
            {
                var catalog = new ReplicaCatalog();
                catalog.Add(new ReplicaTarget("vol-1", Volumes[node], new StoredVolumeControl(Volumes[node], new LocalVolumePool(Pools[node]), "vol-1")));
                var server = new ReplicaServer(catalog, new FrontendLog(_ => { }, _ => { }, (_, _) => { }));
                _servers.Add(server);
                server.Start(new IPEndPoint(IPAddress.Loopback, 0));
                var link = await ReplicaLink.ConnectAsync(server.LocalEndpoint, "vol-1", set.Epoch);
                _links.Add(link);
                var channel = new NodeChannel($"n{node + 1}", link);
                channels.Add(node == 1 ? wrapFirst(channel) : channel);
            }
            Owner = new ReplicatedVolume(Volumes[0], channels, set.Epoch, new SpecInSyncSet(new ReplicaSetWriter(_store), "db", "n1"))
            {
                Snapshots = new PoolSnapshotImages(new LocalVolumePool(Pools[0]), "vol-1"),
            };
            for (int block = 0; block < Blocks; block++)
            {
                await Owner.WriteAsync((long)block * Block, Content(block));
            }
            await Owner.FlushAsync();
        }

        /// <summary>Snapshots the volume on every copy at once, as the volume service does.</summary>
        public Task SnapshotAsync(string name) => Owner.CreateSnapshotAsync(name, () =>
        {
            Pools[0].CreateSnapshot("vol-1", name);
            return ValueTask.CompletedTask;
        });

        public StoredSnapshot Snapshot(int node, string name)
        {
            Assert.True(Pools[node].TryGetSnapshot("vol-1", name, out var snapshot));
            return snapshot!;
        }

        public async Task<ReplicaSet> StoredSetAsync()
        {
            var kv = await _store!.GetAsync(ClusterKeys.Volumes + "db");
            return JsonSerializer.Deserialize(kv!.Value, ControlPlaneJson.Default.VolumeSpec)!.Replication!;
        }

        public Task<ScrubReport> ScrubAsync() =>
            new VolumeScrub(new LocalVolumePool(Pools[0]), "vol-1", Owner, "n1", Log).RunAsync(null, 0, CancellationToken.None);

        public async ValueTask DisposeAsync()
        {
            foreach (var link in _links)
            {
                await link.DisposeAsync();
            }
            foreach (var server in _servers)
            {
                await server.DisposeAsync();
            }
            Owner?.Dispose();
            foreach (var pool in Pools)
            {
                pool.Dispose();
            }
            if (_store is not null)
            {
                await _store.DisposeAsync();
            }
            Directory.Delete(_root, recursive: true);
        }
    }

    /// <summary>Lets a read reach the replica, then holds its answer until released: the repair then holds a copy that a write could make stale.</summary>
    private sealed class HoldAfterReadChannel(IReplicaChannel inner) : IReplicaChannel
    {
        public string Replica => inner.Replica;

        public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
            Memory<byte> readInto, CancellationToken cancellationToken = default)
        {
            var status = await inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
            if (op == ReplicaOp.Read && Reached.TrySetResult())
            {
                await Release.Task;
            }
            return status;
        }
    }

    /// <summary>A replica whose drive fails writes: once <see cref="Refuse"/> is set, writes answer <see cref="ReplicaStatus.Io"/>.</summary>
    private sealed class RefuseWritesChannel(IReplicaChannel inner) : IReplicaChannel
    {
        public string Replica => inner.Replica;

        private volatile bool _refuse;

        public bool Refuse
        {
            get => _refuse;
            set => _refuse = value;
        }

        public ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
            Memory<byte> readInto, CancellationToken cancellationToken = default) =>
            _refuse && op == ReplicaOp.Write ? ValueTask.FromResult(ReplicaStatus.Io) : inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
    }

    /// <summary>Keeps what a scrub logs, formatted, to show that a repair is logged.</summary>
    internal sealed class ListLogger : ILogger
    {
        private readonly List<string> _lines = [];

        public IReadOnlyList<string> Lines
        {
            get
            {
                lock (_lines)
                {
                    return [.. _lines];
                }
            }
        }

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (_lines)
            {
                _lines.Add($"{logLevel}: {formatter(state, exception)}");
            }
        }
    }
}

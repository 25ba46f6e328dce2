using Cairn.Core;
using Cairn.Testing;
using static Cairn.Replication.Tests.TestData;

namespace Cairn.Replication.Tests;

/// <summary>
/// The owner mends its snapshots' bad blocks from the same snapshot on an in-sync replica: it reads the block from each
/// replica in turn until one answers with a good copy, mends its own in place only with what the block's checksum
/// expects, and reports each block, naming the snapshot; when no replica has a good copy it says why for each.
/// </summary>
public sealed class SnapshotRepairTests
{
    private const long Size = 64 << 10; // 16 blocks
    private const int Block = 4096;

    /// <summary>
    /// The owner's snapshots as a pool with checksums holds them: the content each was taken with, what its blocks
    /// hold now (bit rot included), and an in-place rewrite that takes only data matching the block's checksum.
    /// </summary>
    private sealed class MendableImages : ISnapshotImages
    {
        private readonly Dictionary<string, (byte[] Taken, byte[] Now)> _snapshots = [];

        public void Add(string name, byte[] content) => _snapshots[name] = (content.ToArray(), content.ToArray());

        public void Remove(string name) => _snapshots.Remove(name);

        public void Rot(string name, long offset) => _snapshots[name].Now[offset + 100] ^= 0x40;

        public byte[] Now(string name) => _snapshots[name].Now;

        public IReadOnlyList<SnapshotImage> List() => [];

        public SnapshotRewrite RewriteBlock(string name, long offsetBytes, ReadOnlySpan<byte> block)
        {
            if (!_snapshots.TryGetValue(name, out var snapshot))
            {
                return new SnapshotRewrite(SnapshotRewriteOutcome.NotHeld, $"no snapshot named '{name}' (deleted since?)");
            }
            var taken = snapshot.Taken.AsSpan((int)offsetBytes, Block);
            var now = snapshot.Now.AsSpan((int)offsetBytes, Block);
            if (Crc32C.Compute(block) != Crc32C.Compute(taken))
            {
                return new SnapshotRewrite(SnapshotRewriteOutcome.WrongData, "does not match the checksum");
            }
            if (now.SequenceEqual(taken))
            {
                return new SnapshotRewrite(SnapshotRewriteOutcome.AlreadyGood, "reads correctly");
            }
            block.CopyTo(now);
            return new SnapshotRewrite(SnapshotRewriteOutcome.Rewritten, "rewritten in place");
        }
    }

    private sealed record Setup(ReplicatedVolume Volume, MendableImages Images, RecordingControl[] Remotes, DirectChannel[] Channels, List<string> Log);

    /// <summary>An owner and <paramref name="remotes"/> replicas, each holding snapshot "s1" of the same content.</summary>
    private static Setup Build(int remotes = 2)
    {
        byte[] content = Pattern((int)Size, 1);
        var log = new List<string>();
        var controls = new RecordingControl[remotes];
        var channels = new DirectChannel[remotes];
        for (int i = 0; i < remotes; i++)
        {
            controls[i] = new RecordingControl($"r{i}", () => content.ToArray(), log);
            controls[i].CreateSnapshot("s1");
            channels[i] = new DirectChannel(new ReplicaTarget($"r{i}", new RamBlockDevice(Size), controls[i]), 1);
        }
        var images = new MendableImages();
        images.Add("s1", content);
        var volume = new ReplicatedVolume(new RamBlockDevice(Size), channels, 1, new InSyncSet(1, [.. channels.Select(c => c.Replica)])) { Snapshots = images };
        log.Clear();
        return new Setup(volume, images, controls, channels, log);
    }

    private static async Task<List<BlockRepair>> RepairAsync(Setup s, params SnapshotBlock[] blocks)
    {
        var reports = new List<BlockRepair>();
        await s.Volume.RepairSnapshotBlocksAsync(blocks, reports.Add);
        return reports;
    }

    [Fact]
    public async Task A_bad_snapshot_block_is_mended_from_the_first_replica_whose_copy_of_the_snapshot_reads_correctly()
    {
        var s = Build();
        using var _ = s.Volume;
        s.Images.Rot("s1", 3 * Block);
        s.Remotes[0].BadSnapshotBlocks.Add(("s1", 3 * Block)); // r0's copy is bad too

        var reports = await RepairAsync(s, new SnapshotBlock("s1", 3 * Block));

        Assert.Equal([new BlockRepair(null, 3 * Block, BlockRepairOutcome.Repaired, "rewritten from the copy on r1") { Snapshot = "s1" }], reports);
        Assert.Equal(Pattern((int)Size, 1), s.Images.Now("s1"));
        Assert.Equal(["r1 read s1 at 12288"], s.Log); // r0 failed before it could answer with data
        Assert.Equal(BlockRepairOutcome.AlreadyGood, (await RepairAsync(s, new SnapshotBlock("s1", 3 * Block))).Single().Outcome);
    }

    [Fact]
    public async Task A_copy_that_is_not_what_the_checksum_expects_is_never_written_and_the_next_replica_is_tried()
    {
        var s = Build();
        using var _ = s.Volume;
        s.Images.Rot("s1", 5 * Block);
        s.Remotes[0].Snapshots["s1"][5 * Block + 7] ^= 1; // r0 answers with data its store failed to notice was wrong

        var reports = await RepairAsync(s, new SnapshotBlock("s1", 5 * Block));

        Assert.Equal("rewritten from the copy on r1", reports.Single().Detail);
        Assert.Equal(Pattern((int)Size, 1), s.Images.Now("s1"));
    }

    [Fact]
    public async Task Without_a_good_copy_anywhere_the_block_is_unrecoverable_with_each_replica_s_reason_and_stays_as_it_was()
    {
        var s = Build(remotes: 3);
        using var _ = s.Volume;
        s.Images.Rot("s1", 0);
        byte[] rotten = s.Images.Now("s1").ToArray();
        s.Remotes[0].BadSnapshotBlocks.Add(("s1", 0));
        s.Remotes[1].DeleteSnapshot("s1");
        s.Channels[2].Unreachable = true;

        var reports = await RepairAsync(s, new SnapshotBlock("s1", 0));

        Assert.Equal([new BlockRepair(null, 0, BlockRepairOutcome.Unrecoverable,
            "no in-sync replica has a good copy (r0: its copy fails too; r1: it holds no snapshot named s1; r2: unreachable)") { Snapshot = "s1" }], reports);
        Assert.Equal(rotten, s.Images.Now("s1"));
        Assert.Equal(["r0", "r1", "r2"], s.Volume.InSyncReplicas); // a failed read is no reason to drop a replica
    }

    [Fact]
    public async Task A_snapshot_deleted_on_the_owner_since_the_scrub_or_a_volume_without_replicas_is_reported_not_mended()
    {
        var s = Build();
        using var _ = s.Volume;
        s.Images.Remove("s1");
        Assert.Equal("no snapshot named 's1' (deleted since?)", (await RepairAsync(s, new SnapshotBlock("s1", Block))).Single().Detail);

        var alone = Build(remotes: 0);
        using var __ = alone.Volume;
        alone.Images.Rot("s1", Block);
        var report = (await RepairAsync(alone, new SnapshotBlock("s1", Block))).Single();
        Assert.Equal((BlockRepairOutcome.Unrecoverable, "no other replica is in sync to take a good copy from"), (report.Outcome, report.Detail));
    }

    [Fact]
    public async Task A_replica_that_has_seen_a_newer_epoch_fences_the_owner_and_stops_the_repair()
    {
        var s = Build();
        using var _ = s.Volume;
        s.Images.Rot("s1", Block);
        s.Channels[0].Answer = ReplicaStatus.StaleEpoch;

        await Assert.ThrowsAsync<BlockDeviceException>(() => RepairAsync(s, new SnapshotBlock("s1", Block), new SnapshotBlock("s1", 2 * Block)));

        Assert.NotEqual(Pattern((int)Size, 1), s.Images.Now("s1")); // nothing mended by a deposed owner
        Assert.Empty(s.Log);
    }
}

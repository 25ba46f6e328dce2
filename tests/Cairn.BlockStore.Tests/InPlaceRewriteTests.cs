using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

/// <summary>
/// The repair primitive for blocks a snapshot holds: a bad block is rewritten in place from a good copy, only with the
/// exact content its checksum expects, durably, for every map that shares it; anything else is refused and changes
/// nothing.
/// </summary>
public sealed class InPlaceRewriteTests
{
    private static readonly byte[] Original = Pattern(4 * Block, 1);

    private static byte[] OriginalBlock(int block) => Original.AsSpan(block * Block, Block).ToArray();

    /// <summary>
    /// Volume "v" of 16 blocks: blocks 0..3 written (physical 0..3), snapshot "s", then block 1 overwritten (physical
    /// 4). Physical 0 is shared by the snapshot and the volume; physical 1 is the snapshot's alone.
    /// </summary>
    private static async Task<(BlockPool Pool, StoredVolume Volume)> SnapshotWithSharedAndOwnBlocksAsync(SimulatedMedium medium)
    {
        var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 16 * Block);
        await v.WriteAsync(0, Original);
        pool.CreateSnapshot("v", "s");
        await v.WriteAsync(Block, Pattern(Block, 2));
        await v.FlushAsync();
        return (pool, v);
    }

    [Fact]
    public async Task A_bad_snapshot_only_block_and_a_bad_shared_block_are_rewritten_in_place_and_read_back_for_every_map_holding_them()
    {
        var medium = new SimulatedMedium();
        var (pool, v) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
        using var _ = pool;
        medium.Corrupt("data.cairn", 0 * Block + 7, [0x5A]); // shared by "s" and the volume
        medium.Corrupt("data.cairn", 1 * Block + 7, [0x5A]); // "s" alone
        var scrub = pool.ScrubVolume("v");
        Assert.Equal([new SnapshotBadBlock("s", 0, SharedWithVolume: true), new SnapshotBadBlock("s", Block, SharedWithVolume: false)], scrub.SnapshotBadBlocks);
        long usedBefore = pool.UsedBytes;
        var allocationBefore = await v.AllocationAsync(0, 16 * Block);

        var shared = pool.RewriteBlockInPlace("v", "s", 0, OriginalBlock(0));
        var own = pool.RewriteBlockInPlace("v", "s", Block, OriginalBlock(1));

        Assert.Equal((BlockRewriteOutcome.Rewritten, "v@s at byte 0: physical block 0 rewritten in place"), (shared.Outcome, shared.Detail));
        Assert.Equal(BlockRewriteOutcome.Rewritten, own.Outcome);
        var again = pool.ScrubVolume("v");
        Assert.Equal((0L, 5L), (again.ErrorCount, again.BlocksChecked));
        Assert.Equal(Original, await pool.Snapshot("v", "s").ReadAsync(0, 4 * Block));
        Assert.Equal(OriginalBlock(0), await v.ReadAsync(0, Block)); // the volume reads the shared block: mended too
        Assert.Equal(Pattern(Block, 2), await v.ReadAsync(Block, Block));
        Assert.Equal(usedBefore, pool.UsedBytes); // no block allocated, no map changed
        Assert.Equal(allocationBefore, await v.AllocationAsync(0, 16 * Block));
        Assert.Equal(BlockRewriteOutcome.AlreadyGood, pool.RewriteBlockInPlace("v", "s", Block, OriginalBlock(1)).Outcome);
    }

    [Fact]
    public async Task A_bad_block_of_the_live_volume_can_be_rewritten_in_place_too()
    {
        var medium = new SimulatedMedium();
        var (pool, v) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
        using var _ = pool;
        medium.Corrupt("data.cairn", 4 * Block + 9, [0x11]); // the volume's own block 1

        Assert.Equal(BlockRewriteOutcome.Rewritten, pool.RewriteBlockInPlace("v", null, Block, Pattern(Block, 2)).Outcome);

        Assert.Equal(Pattern(Block, 2), await v.ReadAsync(Block, Block));
        Assert.Equal(0, pool.ScrubVolume("v").ErrorCount);
    }

    [Fact]
    public async Task Data_that_is_not_what_the_checksum_expects_is_refused_and_changes_nothing()
    {
        var medium = new SimulatedMedium();
        var (pool, v) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
        using var _ = pool;
        medium.Corrupt("data.cairn", 1 * Block + 7, [0x5A]);
        byte[] before = medium.ReadAllBytes("data.cairn");

        var wrong = pool.RewriteBlockInPlace("v", "s", Block, Pattern(Block, 2)); // the volume's newer content, not the snapshot's

        Assert.Equal(BlockRewriteOutcome.WrongData, wrong.Outcome);
        Assert.Equal("the data offered for v@s at byte 4096 does not match the block's checksum: it is not the content the block held", wrong.Detail);
        Assert.Equal(before, medium.ReadAllBytes("data.cairn"));
        Assert.Equal([new SnapshotBadBlock("s", Block, SharedWithVolume: false)], pool.ScrubVolume("v").SnapshotBadBlocks);
    }

    [Fact]
    public async Task A_live_block_overwritten_after_the_scrub_refuses_the_old_content()
    {
        var medium = new SimulatedMedium();
        var (pool, v) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
        using var _ = pool;
        medium.Corrupt("data.cairn", 4 * Block + 9, [0x11]);
        Assert.Equal([new VolumeBadBlock(Block, SharedWithSnapshot: false)], pool.ScrubVolume("v").VolumeBadBlocks);
        await v.WriteAsync(Block, Pattern(Block, 3)); // a client replaced it meanwhile
        byte[] before = medium.ReadAllBytes("data.cairn");

        Assert.Equal(BlockRewriteOutcome.WrongData, pool.RewriteBlockInPlace("v", null, Block, Pattern(Block, 2)).Outcome);

        Assert.Equal(before, medium.ReadAllBytes("data.cairn"));
        Assert.Equal(Pattern(Block, 3), await v.ReadAsync(Block, Block));
    }

    [Fact]
    public async Task What_no_map_holds_any_more_is_refused_with_the_reason()
    {
        var medium = new SimulatedMedium();
        var (pool, v) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
        using var _ = pool;
        medium.Corrupt("data.cairn", 1 * Block + 7, [0x5A]);
        pool.CreateSnapshot("v", "t");
        pool.DeleteSnapshot("v", "s");

        Assert.Equal(new BlockRewriteResult(BlockRewriteOutcome.NotHeld, "volume 'v' has no snapshot named 's' (deleted since?)"),
            pool.RewriteBlockInPlace("v", "s", Block, OriginalBlock(1)));
        Assert.Equal(new BlockRewriteResult(BlockRewriteOutcome.NotHeld, "v@t holds no data block at byte 32768 (trimmed or overwritten since?)"),
            pool.RewriteBlockInPlace("v", "t", 8 * Block, new byte[Block]));
        Assert.Equal(BlockRewriteOutcome.NotHeld, pool.RewriteBlockInPlace("gone", null, 0, OriginalBlock(0)).Outcome);
        Assert.Throws<ArgumentException>(() => pool.RewriteBlockInPlace("v", "t", 0, new byte[100]));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.RewriteBlockInPlace("v", "t", 100, OriginalBlock(0)));
        pool.Dispose();
        await ThrowsBlockError(BlockError.Shutdown, () => Task.FromResult(pool.RewriteBlockInPlace("v", "t", 0, OriginalBlock(0))));
    }

    [Fact]
    public async Task A_rewrite_is_durable_when_it_returns()
    {
        for (int seed = 0; seed < 8; seed++)
        {
            var medium = new SimulatedMedium();
            var (pool, _) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
            medium.Corrupt("data.cairn", 1 * Block + 7, [0x5A]);
            Assert.Equal(BlockRewriteOutcome.Rewritten, pool.RewriteBlockInPlace("v", "s", Block, OriginalBlock(1)).Outcome);

            medium.Crash(new Random(seed)); // power loss, no Dispose: unsynced writes kept or lost sector by sector
            using var reopened = BlockPool.Open(medium, Deterministic());

            Assert.Equal(0, reopened.ScrubVolume("v").ErrorCount);
            Assert.Equal(Original, await reopened.Snapshot("v", "s").ReadAsync(0, 4 * Block));
        }
    }

    [Fact]
    public async Task A_crash_in_the_middle_of_a_rewrite_leaves_the_block_at_worst_as_bad_as_it_was_and_everything_else_intact()
    {
        for (int crashAfter = 0; crashAfter < 2; crashAfter++) // during the write, during the fdatasync
        {
            var medium = new SimulatedMedium();
            var (pool, _) = await SnapshotWithSharedAndOwnBlocksAsync(medium);
            medium.Corrupt("data.cairn", 1 * Block + 7, [0x5A]);
            medium.ScheduleCrash(crashAfter);
            Assert.Throws<SimulatedCrashException>(() => pool.RewriteBlockInPlace("v", "s", Block, OriginalBlock(1)));

            medium.Crash(new Random(crashAfter));
            using var reopened = BlockPool.Open(medium, Deterministic());

            var scrub = reopened.ScrubVolume("v");
            Assert.True(scrub.ErrorCount <= 1, $"crash after {crashAfter}: {scrub.ErrorCount} bad blocks");
            Assert.All(scrub.SnapshotBadBlocks, b => Assert.Equal(new SnapshotBadBlock("s", Block, false), b));
            Assert.Equal(Original.AsSpan(0, Block).ToArray(), await reopened.Snapshot("v", "s").ReadAsync(0, Block));
            Assert.Equal(Original.AsSpan(2 * Block).ToArray(), await reopened.Snapshot("v", "s").ReadAsync(2 * Block, 2 * Block));
            Assert.NotEqual(BlockRewriteOutcome.WrongData, reopened.RewriteBlockInPlace("v", "s", Block, OriginalBlock(1)).Outcome);
            Assert.Equal(Original, await reopened.Snapshot("v", "s").ReadAsync(0, 4 * Block));
        }
    }
}

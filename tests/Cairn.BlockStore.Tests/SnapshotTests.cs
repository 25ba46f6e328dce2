using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class SnapshotTests
{
    private const long Capacity = 4L << 20;

    [Fact]
    public async Task A_snapshot_keeps_its_content_while_the_volume_is_overwritten_trimmed_and_grown()
    {
        using var pool = Sim(new SimulatedMedium(), Capacity);
        var v = pool.CreateVolume("v", 16 * Block);
        await v.WriteAsync(0, Pattern(8 * Block, 1));
        var info = pool.CreateSnapshot("v", "s1");
        Assert.Equal(8 * Block, info.ReferencedBytes);
        await v.WriteAsync(Block, Pattern(2 * Block, 2));
        await v.TrimAsync(4 * Block, 2 * Block);
        await v.WriteAsync(3 * Block + 100, Pattern(10, 3)); // partial block: read-modify-write
        v.Grow(32 * Block);
        var s1 = pool.Snapshot("v", "s1");
        Assert.Equal(16 * Block, s1.SizeBytes);
        Assert.True(s1.IsReadOnly);
        Assert.Equal(Pattern(8 * Block, 1), await s1.ReadAsync(0, 8 * Block));
        Assert.Equal(Pattern(2 * Block, 2), await v.ReadAsync(Block, 2 * Block));
        Assert.All(await v.ReadAsync(4 * Block, 2 * Block), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Snapshots_refuse_writes_trims_and_zeroes_as_read_only()
    {
        using var pool = Sim(new SimulatedMedium(), Capacity);
        pool.CreateVolume("v", 4 * Block);
        pool.CreateSnapshot("v", "s");
        var s = pool.Snapshot("v", "s");
        await ThrowsBlockError(BlockError.ReadOnly, async () => await s.WriteAsync(0, new byte[Block]));
        await ThrowsBlockError(BlockError.ReadOnly, async () => await s.TrimAsync(0, Block));
        var ex = await ThrowsBlockError(BlockError.ReadOnly, async () => await s.WriteZeroesAsync(0, Block, ZeroFlags.None));
        Assert.Contains("v@s", ex.Message, StringComparison.Ordinal);
        await ThrowsBlockError(BlockError.InvalidArgument, async () => await s.ReadAsync(4 * Block, new byte[1]));
    }

    [Fact]
    public void Names_are_checked_duplicates_and_unknowns_refused_clearly()
    {
        using var pool = Sim(new SimulatedMedium(), Capacity);
        pool.CreateVolume("v", 4 * Block);
        pool.CreateSnapshot("v", "s");
        Assert.Contains("already has a snapshot named 's'", Assert.Throws<InvalidOperationException>(() => pool.CreateSnapshot("v", "s")).Message, StringComparison.Ordinal);
        Assert.Contains("does not exist", Assert.Throws<KeyNotFoundException>(() => pool.CreateSnapshot("nope", "s")).Message, StringComparison.Ordinal);
        Assert.Contains("no snapshot named 'x'", Assert.Throws<KeyNotFoundException>(() => pool.DeleteSnapshot("v", "x")).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => pool.CreateSnapshot("v", ""));
        Assert.Throws<ArgumentException>(() => pool.CreateSnapshot("v", new string('x', 256)));
        Assert.Throws<InvalidOperationException>(() => pool.CloneVolume("v", "v", "s"));
        Assert.Single(pool.ListSnapshots("v"));
    }

    [Fact]
    public async Task Space_exclusive_to_a_snapshot_is_what_deleting_it_gives_back()
    {
        using var pool = Sim(new SimulatedMedium(), Capacity);
        var v = pool.CreateVolume("v", 16 * Block);
        await v.WriteAsync(0, Pattern(8 * Block, 1));
        pool.CreateSnapshot("v", "s1");
        await v.WriteAsync(0, Pattern(4 * Block, 2));        // s1 alone keeps the old blocks 0..3
        pool.CreateSnapshot("v", "s2");
        await v.WriteAsync(2 * Block, Pattern(4 * Block, 3)); // s2 alone keeps the blocks 2..3 of pattern 2; s1 and s2 share 4..5
        var list = pool.ListSnapshots("v");
        Assert.Equal(["s1", "s2"], list.Select(s => s.Name));
        Assert.Equal([4L * Block, 2L * Block], list.Select(s => s.ExclusiveBytes));
        Assert.Equal([4L * Block, 6L * Block], list.Select(s => s.SharedBytes));
        long used = pool.UsedBytes;
        Assert.Equal(16 * Block, used); // 8 + 4 + 4: every overwritten block is still held by a snapshot
        pool.DeleteSnapshot("v", "s1");
        await pool.WaitForReclaimAsync();
        Assert.Equal(used - 4 * Block, pool.UsedBytes);
        Assert.Equal(4 * Block, pool.ListSnapshots("v").Single().ExclusiveBytes); // s2 now alone holds 4..5 of pattern 1 too
    }

    [Fact]
    public async Task Deleting_a_middle_snapshot_leaves_the_others_byte_for_byte_and_survives_reopen()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, Capacity);
        var v = pool.CreateVolume("v", 16 * Block);
        var expected = new List<byte[]>();
        for (int i = 0; i < 5; i++)
        {
            await v.WriteAsync(i * Block, Pattern(6 * Block, 10 + i));
            expected.Add(await v.ReadAsync(0, 16 * Block));
            pool.CreateSnapshot("v", $"s{i}");
        }
        pool.DeleteSnapshot("v", "s2");
        pool.DeleteSnapshot("v", "s3");
        await pool.WaitForReclaimAsync();
        await AssertSnapshots(pool, expected, [0, 1, 4]);
        long used = pool.UsedBytes;
        pool.Dispose();
        using var reopened = BlockPool.Open(medium, Deterministic());
        await AssertSnapshots(reopened, expected, [0, 1, 4]);
        Assert.Equal(used, reopened.UsedBytes); // the space the background scans gave back is what a fresh open finds free
    }

    [Fact]
    public async Task A_clone_shares_blocks_diverges_independently_and_outlives_its_source()
    {
        using var pool = Sim(new SimulatedMedium(), Capacity);
        var v = pool.CreateVolume("v", 8 * Block);
        await v.WriteAsync(0, Pattern(8 * Block, 1));
        pool.CreateSnapshot("v", "s");
        long used = pool.UsedBytes;
        var clone = pool.CloneVolume("c", "v", "s");
        Assert.Equal(used, pool.UsedBytes); // nothing copied
        Assert.Equal(8 * Block, clone.AllocatedBytes);
        await clone.WriteAsync(0, Pattern(Block, 2));
        await v.WriteAsync(Block, Pattern(Block, 3));
        Assert.Equal(Pattern(8 * Block, 1).AsSpan(Block, 7 * Block).ToArray(), await clone.ReadAsync(Block, 7 * Block));
        Assert.Equal(Pattern(Block, 2), await clone.ReadAsync(0, Block));
        Assert.Equal(Pattern(8 * Block, 1).AsSpan(0, Block).ToArray(), await v.ReadAsync(0, Block));
        pool.DeleteSnapshot("v", "s"); // handled safely: the clone keeps every block it shows
        pool.DeleteVolume("v");
        await pool.WaitForReclaimAsync();
        await v.FlushAsync().AsTask().ContinueWith(_ => { }); // the deleted volume's flush fails; the pool's sync point below counts
        await clone.FlushAsync();
        Assert.Equal(Pattern(Block, 2), await clone.ReadAsync(0, Block));
        Assert.Equal(Pattern(8 * Block, 1).AsSpan(Block, 7 * Block).ToArray(), await clone.ReadAsync(Block, 7 * Block));
        Assert.Equal(8 * Block, pool.UsedBytes);
    }

    [Fact]
    public async Task Revert_brings_back_a_snapshot_keeps_newer_ones_and_frees_the_dropped_blocks()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, Capacity);
        var v = pool.CreateVolume("v", 8 * Block);
        await v.WriteAsync(0, Pattern(8 * Block, 1));
        pool.CreateSnapshot("v", "old");
        await v.WriteAsync(0, Pattern(4 * Block, 2));
        pool.CreateSnapshot("v", "new");
        await v.WriteAsync(0, Pattern(2 * Block, 3)); // only the live map holds these two
        v.Grow(12 * Block);
        long used = pool.UsedBytes;
        pool.RevertVolume("v", "old");
        Assert.Equal(used - 2 * Block, pool.UsedBytes);
        Assert.Equal(12 * Block, v.SizeBytes); // volumes only grow
        Assert.Equal(Pattern(8 * Block, 1), await v.ReadAsync(0, 8 * Block));
        Assert.All(await v.ReadAsync(8 * Block, 4 * Block), b => Assert.Equal(0, b));
        var newer = await pool.Snapshot("v", "new").ReadAsync(0, 8 * Block);
        await v.WriteAsync(0, Pattern(Block, 4)); // after the revert, "old" is the parent: its block 0 stays
        pool.DeleteSnapshot("v", "new");
        await pool.WaitForReclaimAsync();
        Assert.Equal(Pattern(8 * Block, 1), await pool.Snapshot("v", "old").ReadAsync(0, 8 * Block));
        Assert.Equal(Pattern(4 * Block, 2), newer.AsSpan(0, 4 * Block).ToArray());
        pool.Dispose();
        using var reopened = BlockPool.Open(medium, Deterministic());
        Assert.Equal(Pattern(Block, 4), await reopened.Volume("v").ReadAsync(0, Block));
        Assert.Equal(Pattern(8 * Block, 1).AsSpan(Block, 7 * Block).ToArray(), await reopened.Volume("v").ReadAsync(Block, 7 * Block));
        Assert.Equal(Pattern(8 * Block, 1), await reopened.Snapshot("v", "old").ReadAsync(0, 8 * Block));
    }

    [Fact]
    public async Task Deleting_a_volume_deletes_its_snapshots_and_returns_all_space()
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, Capacity);
        var v = pool.CreateVolume("v", 8 * Block);
        for (int i = 0; i < 4; i++)
        {
            await v.WriteAsync(i * Block, Pattern(4 * Block, i));
            pool.CreateSnapshot("v", $"s{i}");
        }
        pool.DeleteVolume("v");
        await pool.WaitForReclaimAsync();
        Assert.Equal(0, pool.UsedBytes);
        Assert.False(pool.TryGetSnapshot("v", "s0", out _));
        pool.CreateVolume("v", 8 * Block);
        Assert.Throws<KeyNotFoundException>(() => pool.DeleteSnapshot("v", "s0"));
    }

    [Fact]
    public async Task Snapshots_and_clones_survive_checkpoints_and_journal_replay()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, Capacity, Deterministic(checkpointJournalBytes: 600));
        var v = pool.CreateVolume("v", 64 * Block);
        var expected = new Dictionary<string, byte[]>();
        for (int i = 0; i < 6; i++)
        {
            await v.WriteAsync(i * 3 * Block, Pattern(5 * Block, i));
            await v.TrimAsync(i * Block, Block);
            pool.CreateSnapshot("v", $"s{i}");
            expected[$"s{i}"] = await v.ReadAsync(0, 64 * Block);
            if (i == 2)
            {
                var c = pool.CloneVolume("c", "v", "s1");
                await c.WriteAsync(Block, Pattern(Block, 99));
                pool.CreateSnapshot("c", "cs");
                expected["c@cs"] = await c.ReadAsync(0, 64 * Block);
            }
        }
        pool.DeleteSnapshot("v", "s1"); // the clone's source, with the clone's own snapshot below it
        expected.Remove("s1");
        pool.CheckpointNow();
        pool.DeleteSnapshot("v", "s3");
        expected.Remove("s3");
        await pool.WaitForReclaimAsync();
        await v.FlushAsync();
        long used = pool.UsedBytes;
        pool.Dispose();
        using var reopened = BlockPool.Open(medium, Deterministic());
        foreach (var (name, bytes) in expected)
        {
            var parts = name.Split('@');
            var snap = parts.Length == 2 ? reopened.Snapshot(parts[0], parts[1]) : reopened.Snapshot("v", name);
            Assert.Equal(bytes, await snap.ReadAsync(0, bytes.Length));
        }
        Assert.Equal(used, reopened.UsedBytes);
    }

    private static async Task AssertSnapshots(BlockPool pool, List<byte[]> expected, int[] present)
    {
        Assert.Equal(present.Select(i => $"s{i}"), pool.ListSnapshots("v").Select(s => s.Name));
        foreach (int i in present)
        {
            Assert.Equal(expected[i], await pool.Snapshot("v", $"s{i}").ReadAsync(0, expected[i].Length));
        }
    }
}

public sealed class SnapshotLineageTests
{
    private const long Capacity = 4L << 20;

    /// <summary>A snapshot with a clone and a newer snapshot below it: deleting it must not free what both children still show.</summary>
    [Fact]
    public async Task Deleting_a_snapshot_two_children_share_keeps_their_blocks_until_one_goes()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, Capacity);
        var v = pool.CreateVolume("v", 8 * Block);
        await v.WriteAsync(0, Pattern(8 * Block, 1));
        pool.CreateSnapshot("v", "origin");
        pool.CloneVolume("c", "v", "origin");
        await v.WriteAsync(0, Pattern(Block, 2));
        long used = pool.UsedBytes;
        pool.DeleteSnapshot("v", "origin"); // hidden: v and c both show its blocks 1..7
        await pool.WaitForReclaimAsync();
        Assert.Equal(used, pool.UsedBytes);
        Assert.Empty(pool.ListSnapshots("v"));
        pool.CreateSnapshot("v", "origin"); // the name is free again
        pool.Dispose();
        pool = BlockPool.Open(medium, Deterministic()); // the hidden node survives a reopen
        Assert.Equal(used, pool.UsedBytes);
        Assert.Equal(Pattern(8 * Block, 1), await pool.Volume("c").ReadAsync(0, 8 * Block));
        pool.DeleteVolume("c"); // one child left: the hidden node goes, block 0 of pattern 1 with it
        await pool.WaitForReclaimAsync();
        await pool.Volume("v").FlushAsync();
        Assert.Equal(used - Block, pool.UsedBytes);
        Assert.Equal(Pattern(8 * Block, 1).AsSpan(Block).ToArray(), await pool.Volume("v").ReadAsync(Block, 7 * Block));
        pool.Dispose();
        using var reopened = BlockPool.Open(medium, Deterministic());
        Assert.Equal(used - Block, reopened.UsedBytes);
    }

    [Fact]
    public async Task Reverting_past_newer_snapshots_then_deleting_the_target_keeps_both_branches()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, Capacity);
        var v = pool.CreateVolume("v", 4 * Block);
        await v.WriteAsync(0, Pattern(4 * Block, 1));
        pool.CreateSnapshot("v", "a");
        await v.WriteAsync(0, Pattern(Block, 2));
        pool.CreateSnapshot("v", "b");
        pool.RevertVolume("v", "a"); // "a" now has two children: "b" and the live map
        pool.DeleteSnapshot("v", "a");
        await pool.WaitForReclaimAsync();
        Assert.Equal(Pattern(4 * Block, 1), await v.ReadAsync(0, 4 * Block));
        var b = await pool.Snapshot("v", "b").ReadAsync(0, 4 * Block);
        Assert.Equal(Pattern(Block, 2), b.AsSpan(0, Block).ToArray());
        Assert.Equal(Pattern(4 * Block, 1).AsSpan(Block).ToArray(), b.AsSpan(Block).ToArray());
        pool.DeleteSnapshot("v", "b");
        await pool.WaitForReclaimAsync();
        await v.FlushAsync();
        Assert.Equal(4 * Block, pool.UsedBytes);
        pool.Dispose();
        using var reopened = BlockPool.Open(medium, Deterministic());
        Assert.Equal(4 * Block, reopened.UsedBytes);
        Assert.Equal(Pattern(4 * Block, 1), await reopened.Volume("v").ReadAsync(0, 4 * Block));
    }
}

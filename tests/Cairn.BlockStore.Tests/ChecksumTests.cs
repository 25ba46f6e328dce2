using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class ChecksumTests
{
    [Fact]
    public async Task A_corrupted_block_on_disk_fails_its_read_with_io_and_is_counted()
    {
        using var dir = new TempDir();
        var blocks = new byte[4][];
        using (var pool = BlockPool.Create(dir.Path, "p", 16L << 20))
        {
            var v = pool.CreateVolume("v", 1L << 20);
            for (int i = 0; i < 4; i++)
            {
                blocks[i] = Pattern(Block, 100 + i);
                await v.WriteAsync(i * Block, blocks[i]);
            }
        }
        // Flip one byte in the middle of block 1's copy in the data file.
        string dataPath = Path.Combine(dir.Path, "data.cairn");
        var file = File.ReadAllBytes(dataPath);
        int at = IndexOf(file, blocks[1]);
        Assert.True(at >= 0, "block 1's content should be in the data file");
        using (var fs = new FileStream(dataPath, FileMode.Open, FileAccess.Write))
        {
            fs.Position = at + 1000;
            fs.WriteByte((byte)(file[at + 1000] ^ 0x40));
        }

        using var reopened = BlockPool.Open(dir.Path);
        var events = new List<ChecksumErrorEventArgs>();
        reopened.ChecksumError += (_, e) => events.Add(e);
        var r = reopened.Volume("v");
        var ex = await ThrowsBlockError(BlockError.Io, () => r.ReadAsync(Block, new byte[Block]).AsTask());
        Assert.Contains("checksum", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1, r.ChecksumErrors);
        Assert.Equal(1, reopened.ChecksumErrors);
        Assert.Equal(Block, Assert.Single(events).OffsetBytes);

        // a partial read of the bad block and a read spanning it fail too; the other blocks are fine
        await ThrowsBlockError(BlockError.Io, () => r.ReadAsync(Block + 10, new byte[10]).AsTask());
        await ThrowsBlockError(BlockError.Io, () => r.ReadAsync(0, new byte[4 * Block]).AsTask());
        Assert.Equal(3, r.ChecksumErrors);
        Assert.Equal(blocks[0], await r.ReadAsync(0, Block));
        Assert.Equal(blocks[2], await r.ReadAsync(2 * Block, Block));
        Assert.Equal(blocks[3], await r.ReadAsync(3 * Block, Block));

        // a partial write cannot merge with bad data: it fails rather than spreading it under a fresh checksum
        await ThrowsBlockError(BlockError.Io, () => r.WriteAsync(Block + 5, new byte[5]).AsTask());
        // a whole-block overwrite replaces the bad copy
        await r.WriteAsync(Block, blocks[1]);
        Assert.Equal(blocks[1], await r.ReadAsync(Block, Block));
    }

    [Fact]
    public async Task Writing_all_of_a_volume_s_last_partial_block_replaces_a_corrupt_copy_and_pads_it_with_zeros()
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 2 * Block + 512);
        await v.WriteAsync(0, Pattern(2 * Block + 512, 1)); // physical 0..2, the last block a partial one
        medium.Corrupt("data.cairn", 2 * Block + 100, [0xA5]);
        await ThrowsBlockError(BlockError.Io, () => v.ReadAsync(2 * Block, new byte[512]).AsTask());
        await ThrowsBlockError(BlockError.Io, () => v.WriteAsync(2 * Block + 256, new byte[256]).AsTask()); // a merge still refuses bad data

        await v.WriteAsync(2 * Block, Pattern(512, 2)); // from the block's start to the volume's end: a whole block
        Assert.Equal(Pattern(512, 2), await v.ReadAsync(2 * Block, 512));
        v.Grow(3 * Block);
        byte[] padded = [.. Pattern(512, 2), .. new byte[Block - 512]];
        Assert.Equal(padded, await v.ReadAsync(2 * Block, Block)); // padded with zeros
        await v.WriteAsync(2 * Block, Pattern(512, 3)); // no longer the last block: merged, keeping the rest
        byte[] merged = [.. Pattern(512, 3), .. new byte[Block - 512]];
        Assert.Equal(merged, await v.ReadAsync(2 * Block, Block));
        Assert.Equal(Pattern(2 * Block, 1), await v.ReadAsync(0, 2 * Block));
    }

    [Fact]
    public async Task Media_errors_surface_as_io_errors()
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 1L << 20);
        await v.WriteAsync(0, Pattern(2 * Block, 1));
        medium.InjectFault("data.cairn", 0, 1, reads: true, writes: true);
        await ThrowsBlockError(BlockError.Io, () => v.ReadAsync(0, new byte[Block]).AsTask());
        Assert.Equal(Pattern(2 * Block, 1).AsSpan(Block).ToArray(), await v.ReadAsync(Block, Block));
        medium.ClearFaults();
        Assert.Equal(0, v.ChecksumErrors);
    }

    /// <summary>
    /// A 16-block read made of several physical runs (one pread each) and a hole, verified together: a bad block in the
    /// middle of a run, or a bad single-block run, fails the read with EIO naming exactly that block, while every range
    /// around it still reads back its own data.
    /// </summary>
    [Theory]
    [InlineData(10)] // inside the long run of blocks 8..15
    [InlineData(6)]  // a run of its own
    [InlineData(0)]  // the first block of the first run
    public async Task A_bad_block_inside_a_coalesced_read_fails_only_reads_that_cover_it(int badBlock)
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, 4L << 20);
        var v = pool.CreateVolume("v", 1L << 20);
        var expected = Pattern(16 * Block, 40);
        await v.WriteAsync(0, expected); // blocks 0..15 in one physical run
        for (int b = 5; b <= 7; b++)
        {
            var again = Pattern(Block, 50 + b); // rewritten one by one: runs [0,5) [5] [6] [7] [8,16)
            again.CopyTo(expected, b * Block);
            await v.WriteAsync(b * Block, again);
        }
        await v.TrimAsync(3 * Block, Block); // and a hole inside the first run
        Array.Clear(expected, 3 * Block, Block);
        Assert.Equal(expected, await v.ReadAsync(0, 16 * Block));

        var bad = expected.AsSpan(badBlock * Block, Block).ToArray();
        int at = IndexOf(medium.ReadAllBytes("data.cairn"), bad);
        Assert.True(at >= 0);
        medium.Corrupt("data.cairn", at + 123, [(byte)(bad[123] ^ 0x01)]);

        var events = new List<ChecksumErrorEventArgs>();
        pool.ChecksumError += (_, e) => events.Add(e);
        await ThrowsBlockError(BlockError.Io, () => v.ReadAsync(0, new byte[16 * Block]).AsTask());
        Assert.Equal(badBlock * Block, Assert.Single(events).OffsetBytes);
        Assert.Equal((long)at / Block, events[0].PhysicalBlock);
        if (badBlock > 0)
        {
            Assert.Equal(expected.AsSpan(0, badBlock * Block).ToArray(), await v.ReadAsync(0, badBlock * Block));
        }
        int after = (badBlock + 1) * Block;
        Assert.Equal(expected.AsSpan(after).ToArray(), await v.ReadAsync(after, expected.Length - after));
        Assert.Single(events);
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i += Block)
        {
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle))
            {
                return i;
            }
        }
        return -1;
    }
}

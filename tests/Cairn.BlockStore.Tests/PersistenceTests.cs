using System.Buffers.Binary;
using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class PersistenceTests
{
    [Fact]
    public async Task Close_and_reopen_keeps_volumes_and_data()
    {
        using var dir = new TempDir();
        var model = new byte[3L << 20];
        DateTimeOffset created;
        using (var pool = BlockPool.Create(dir.Path, "persist", 64L << 20))
        {
            var v = pool.CreateVolume("vol-a", model.Length);
            pool.CreateVolume("vol-b", 12345);
            await ApplyRandomIo(v, model, seed: 5, ops: 200);
            created = pool.ListVolumes()[0].CreatedAt;
        }
        using (var pool = BlockPool.Open(dir.Path))
        {
            Assert.Equal("persist", pool.Name);
            Assert.Equal(64L << 20, pool.CapacityBytes);
            Assert.Equal(["vol-a", "vol-b"], pool.ListVolumes().Select(i => i.Id));
            Assert.Equal(12345, pool.Volume("vol-b").SizeBytes);
            Assert.Equal(created.ToUnixTimeMilliseconds(), pool.ListVolumes()[0].CreatedAt.ToUnixTimeMilliseconds());
            var v = pool.Volume("vol-a");
            Assert.Equal(model, await v.ReadAsync(0, model.Length));
            Assert.Equal(v.AllocatedBytes, pool.UsedBytes);
            await ApplyRandomIo(v, model, seed: 6, ops: 50);
        }
        using (var pool = BlockPool.Open(dir.Path))
        {
            Assert.Equal(model, await pool.Volume("vol-a").ReadAsync(0, model.Length));
        }
    }

    [Fact]
    public async Task Reopen_after_checkpoints_and_a_journal_tail_keeps_everything_flushed()
    {
        var medium = new SimulatedMedium();
        var options = Deterministic(checkpointJournalBytes: 16 * 1024, punchHoleMinBlocks: 2);
        var model = new byte[1L << 20];
        var pool = Sim(medium, 32L << 20, options);
        var v = pool.CreateVolume("v", model.Length);
        var gone = pool.CreateVolume("deleted-later", 1L << 20);
        await gone.WriteAsync(0, Pattern(64 * Block, 9));
        for (int round = 0; round < 20; round++)
        {
            await ApplyRandomIo(v, model, seed: 100 + round, ops: 30);
            await v.FlushAsync();
            if (round == 10)
            {
                pool.DeleteVolume("deleted-later");
            }
        }
        Assert.True(medium.Exists(PoolFormat.CheckpointFile), "the threshold should have forced checkpoints");
        Assert.False(medium.Exists(PoolFormat.JournalFile(0)), "the first journal is retired by a checkpoint");
        await v.WriteAsync(5000, Pattern(100, 77), WriteFlags.ForceUnitAccess); // lands in the journal after the last checkpoint
        Pattern(100, 77).CopyTo(model, 5000);
        await v.WriteAsync(9000, Pattern(100, 78)); // never flushed: may or may not survive

        medium.Crash(new Random(1)); // power cut: the pool object is abandoned without Dispose
        using var again = BlockPool.Open(medium, options);
        Assert.Equal(["v"], again.ListVolumes().Select(i => i.Id));
        var read = await again.Volume("v").ReadAsync(0, model.Length);
        if (read.AsSpan(9000, 100).SequenceEqual(Pattern(100, 78)))
        {
            Pattern(100, 78).CopyTo(model, 9000);
        }
        Assert.Equal(model, read);
        Assert.Equal(again.Volume("v").AllocatedBytes, again.UsedBytes);
    }

    [Fact]
    public async Task A_failed_metadata_sync_fails_the_pool_says_why_and_a_reopen_recovers_it()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, 16L << 20);
        var v = pool.CreateVolume("v", 1L << 20);
        await v.WriteAsync(0, Pattern(Block, 1), WriteFlags.ForceUnitAccess);
        Assert.Null(pool.Fault);

        string journal = medium.ListFiles().Single(f => f.StartsWith(PoolFormat.JournalPrefix, StringComparison.Ordinal));
        medium.InjectFault(journal, 0, 1L << 40, reads: false, writes: true);
        await ThrowsBlockError(BlockError.Io, () => v.WriteAsync(Block, Pattern(Block, 2), WriteFlags.ForceUnitAccess).AsTask());
        Assert.Contains("metadata sync failed", pool.Fault, StringComparison.Ordinal);

        // The drive works again, but after a failed sync the page cache cannot be trusted: the pool stays failed, and says so.
        medium.ClearFaults();
        await ThrowsBlockError(BlockError.Io, () => v.WriteAsync(2 * Block, Pattern(Block, 3), WriteFlags.ForceUnitAccess).AsTask());
        Assert.NotNull(pool.Fault);
        pool.Dispose();

        using var reopened = BlockPool.Open(medium, Deterministic());
        Assert.Null(reopened.Fault);
        Assert.Equal(Pattern(Block, 1), await reopened.Volume("v").ReadAsync(0, Block));
        await reopened.Volume("v").WriteAsync(Block, Pattern(Block, 4), WriteFlags.ForceUnitAccess);
        Assert.Equal(Pattern(Block, 4), await reopened.Volume("v").ReadAsync(Block, Block));
    }

    [Fact]
    public void A_pool_in_use_cannot_be_opened_twice()
    {
        using var dir = new TempDir();
        using var pool = BlockPool.Create(dir.Path, "p", 1L << 20);
        var ex = Assert.ThrowsAny<IOException>(() => BlockPool.Open(dir.Path));
        Assert.Contains("in use", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_header_from_a_newer_incompatible_format_is_refused_clearly()
    {
        using var dir = new TempDir();
        BlockPool.Create(dir.Path, "p", 1L << 20).Dispose();
        string path = Path.Combine(dir.Path, PoolFormat.HeaderFile);
        var header = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8), PoolFormat.MaxReadableVersion + 2); // Version
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(10), PoolFormat.MaxReadableVersion + 1); // MinCompatibleVersion
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(508), Crc32C.Compute(header.AsSpan(0, 508)));
        File.WriteAllBytes(path, header);
        var ex = Assert.Throws<PoolFormatException>(() => BlockPool.Open(dir.Path));
        Assert.Contains($"format version {PoolFormat.MaxReadableVersion + 2}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Upgrade Cairn", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_newer_but_compatible_version_opens()
    {
        using var dir = new TempDir();
        BlockPool.Create(dir.Path, "p", 1L << 20).Dispose();
        string path = Path.Combine(dir.Path, PoolFormat.HeaderFile);
        var header = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8), PoolFormat.Version + 1); // written by a newer build, readable by this one
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(508), Crc32C.Compute(header.AsSpan(0, 508)));
        File.WriteAllBytes(path, header);
        using var pool = BlockPool.Open(dir.Path);
        Assert.Equal("p", pool.Name);
    }

    [Theory]
    [InlineData(30)]   // capacity
    [InlineData(60)]   // name
    [InlineData(509)]  // the checksum itself
    public void A_corrupt_header_is_refused_clearly(int offset)
    {
        using var dir = new TempDir();
        BlockPool.Create(dir.Path, "p", 1L << 20).Dispose();
        string path = Path.Combine(dir.Path, PoolFormat.HeaderFile);
        var header = File.ReadAllBytes(path);
        header[offset] ^= 0x10;
        File.WriteAllBytes(path, header);
        var ex = Assert.Throws<PoolFormatException>(() => BlockPool.Open(dir.Path));
        Assert.Contains("corrupt", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Not_a_pool_is_refused_clearly()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Path);
        Assert.Contains("not a Cairn pool", Assert.Throws<PoolFormatException>(() => BlockPool.Open(dir.Path)).Message, StringComparison.Ordinal);
        File.WriteAllBytes(Path.Combine(dir.Path, PoolFormat.HeaderFile), new byte[512]);
        Assert.Contains("bad magic", Assert.Throws<PoolFormatException>(() => BlockPool.Open(dir.Path)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_corrupt_checkpoint_is_refused_rather_than_half_loaded()
    {
        var medium = new SimulatedMedium();
        var options = Deterministic(checkpointJournalBytes: 1);
        using (var pool = Sim(medium, 1L << 20, options))
        {
            var v = pool.CreateVolume("v", 1L << 20);
            await v.WriteAsync(0, Pattern(Block, 1));
            await v.FlushAsync();
        }
        var checkpoint = medium.ReadAllBytes(PoolFormat.CheckpointFile);
        int at = checkpoint.Length - 30; // inside the last map entry
        medium.Corrupt(PoolFormat.CheckpointFile, at, [(byte)(checkpoint[at] ^ 0x01)]);
        var ex = Assert.Throws<PoolFormatException>(() => BlockPool.Open(medium, options));
        Assert.Contains("checkpoint", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>Random writes (aligned and not), trims and zeroes against a byte model.</summary>
    internal static async Task ApplyRandomIo(StoredVolume v, byte[] model, int seed, int ops)
    {
        var rng = new Random(seed);
        for (int i = 0; i < ops; i++)
        {
            int kind = rng.Next(10);
            bool aligned = rng.Next(2) == 0;
            long offset = aligned ? rng.Next(model.Length / Block) * (long)Block : rng.Next(model.Length);
            int length = aligned ? Block * rng.Next(1, 16) : rng.Next(1, 40_000);
            length = (int)Math.Min(length, model.Length - offset);
            if (length == 0)
            {
                continue;
            }
            if (kind < 7)
            {
                var data = Pattern(length, seed * 1000 + i);
                await v.WriteAsync(offset, data, rng.Next(8) == 0 ? WriteFlags.ForceUnitAccess : WriteFlags.None);
                data.CopyTo(model, offset);
            }
            else if (kind < 9)
            {
                await v.TrimAsync(offset, length);
                Array.Clear(model, (int)offset, length);
            }
            else
            {
                await v.WriteZeroesAsync(offset, length, ZeroFlags.NoHole);
                Array.Clear(model, (int)offset, length);
            }
        }
    }
}

using System.Runtime.InteropServices;
using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

/// <summary>
/// <see cref="WriteFlags.Uncached"/> (a rebuild's copy): whole blocks go to the data file past the page cache (O_DIRECT),
/// partial blocks through it; either way the data reads back exactly, is checksummed and is as durable as any write.
/// </summary>
public sealed class UncachedWriteTests
{
    [Fact]
    public async Task Uncached_whole_blocks_bypass_the_page_cache_and_read_back_exactly_after_reopen()
    {
        using var dir = new TempDir();
        var cold = Pattern(2 << 20, 1);
        var hot = Pattern(16 * Block, 2);
        using (var pool = BlockPool.Create(dir.Path, "p", 64L << 20))
        {
            SkipUnlessDirectIo(dir.Path);
            var v = pool.CreateVolume("v", 8L << 20);
            await v.WriteAsync(0, cold, WriteFlags.Uncached);
            await v.WriteAsync(4L << 20, hot);
            Assert.Equal(cold, await v.ReadAsync(0, cold.Length)); // a buffered read of what went past the cache
            await v.FlushAsync();
        }
        // The cold blocks never entered the page cache (the read above cached them, so look at a fresh write instead).
        using (var pool = BlockPool.Open(dir.Path))
        {
            var v = pool.Volume("v");
            Assert.Equal(cold, await v.ReadAsync(0, cold.Length));
            Assert.Equal(hot, await v.ReadAsync(4L << 20, hot.Length));
            long before = PageCache.ResidentBytes(DataPath(dir));
            await v.WriteAsync(6L << 20, Pattern(1 << 20, 3), WriteFlags.Uncached);
            long afterCold = PageCache.ResidentBytes(DataPath(dir));
            await v.WriteAsync(7L << 20, Pattern(1 << 20, 4));
            long afterHot = PageCache.ResidentBytes(DataPath(dir));
            Assert.True(afterCold - before < 64 * Block, $"an uncached 1 MiB write added {afterCold - before} bytes to the page cache");
            Assert.True(afterHot - afterCold >= 1 << 20, $"a buffered 1 MiB write added only {afterHot - afterCold} bytes to the page cache");
            Assert.Equal(Pattern(1 << 20, 3), await v.ReadAsync(6L << 20, 1 << 20));
        }
    }

    [Fact]
    public async Task An_uncached_block_is_checksummed_like_any_other()
    {
        using var dir = new TempDir();
        var blocks = Enumerable.Range(0, 4).Select(i => Pattern(Block, 10 + i)).ToArray();
        using (var pool = BlockPool.Create(dir.Path, "p", 16L << 20))
        {
            var v = pool.CreateVolume("v", 1L << 20);
            await v.WriteAsync(0, blocks.SelectMany(b => b).ToArray(), WriteFlags.Uncached);
        }
        Assert.Equal(1, FlipByteOf(DataPath(dir), blocks[2]));
        using var reopened = BlockPool.Open(dir.Path);
        var r = reopened.Volume("v");
        var ex = await ThrowsBlockError(BlockError.Io, () => r.ReadAsync(2 * Block, new byte[Block]).AsTask());
        Assert.Contains("checksum", ex.Message, StringComparison.Ordinal);
        Assert.Equal(blocks[1], await r.ReadAsync(Block, Block));
    }

    [Fact]
    public async Task Partial_blocks_of_an_uncached_write_go_through_the_cache_and_the_whole_ones_past_it()
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 64 * Block);
        var model = Pattern(64 * Block, 1);
        await v.WriteAsync(0, model);
        long before = medium.UncachedBytes;

        var data = Pattern(3 * Block + 500, 2); // [100, 12888): the tail of block 0, blocks 1 and 2, the head of block 3
        await v.WriteAsync(100, data, WriteFlags.Uncached);
        data.CopyTo(model, 100);
        Assert.Equal(2 * Block, medium.UncachedBytes - before);

        await v.WriteAsync(10 * Block, Pattern(100, 3), WriteFlags.Uncached); // within one block: no whole block at all
        Pattern(100, 3).CopyTo(model, 10 * Block);
        Assert.Equal(2 * Block, medium.UncachedBytes - before);
        Assert.Equal(model, await v.ReadAsync(0, model.Length));
    }

    [Fact]
    public async Task A_flushed_uncached_write_survives_a_crash_and_an_unflushed_one_reads_old_or_new()
    {
        var medium = new SimulatedMedium();
        var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 16 * Block);
        var durable = Pattern(8 * Block, 1);
        var pending = Pattern(8 * Block, 2);
        await v.WriteAsync(0, durable, WriteFlags.Uncached);
        await v.FlushAsync();
        await v.WriteAsync(8 * Block, pending, WriteFlags.Uncached);
        medium.Crash(new Random(3));

        using var recovered = BlockPool.Open(medium, Deterministic());
        var r = recovered.Volume("v");
        Assert.Equal(durable, await r.ReadAsync(0, durable.Length));
        var tail = await r.ReadAsync(8 * Block, pending.Length);
        for (int b = 0; b < 8; b++)
        {
            var block = tail.AsSpan(b * Block, Block);
            Assert.True(block.SequenceEqual(pending.AsSpan(b * Block, Block)) || !block.ContainsAnyExcept((byte)0), $"block {8 + b} holds bytes it never held");
        }
        GC.KeepAlive(pool); // abandoned, like a process that lost power: disposing it would write to the recovered medium
    }

    [Fact]
    public void A_direct_write_reads_back_through_the_cache_and_replaces_what_the_cache_held()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Path);
        var medium = new FileMedium(dir.Path);
        using var file = medium.Open("f", create: true);
        var buffered = Pattern(8 * Block, 1);
        file.WriteAt(0, buffered);
        var read = new byte[8 * Block];
        file.ReadAt(0, read); // now cached
        Assert.Equal(buffered, read);

        using var direct = DirectFile.TryOpen(Path.Combine(dir.Path, "f"));
        Assert.SkipWhen(direct is null, "the filesystem under the temp directory refuses O_DIRECT");
        var fresh = new byte[4 * Block + 1];
        Pattern(4 * Block, 2).CopyTo(fresh, 1); // a source that is not 4 KiB-aligned in memory: copied to an aligned buffer
        Assert.True(direct.TryWrite(2 * Block, fresh.AsSpan(1)));
        Assert.Equal(4 * Block, direct.WrittenBytes);
        file.ReadAt(0, read);
        Assert.Equal([.. buffered.AsSpan(0, 2 * Block), .. fresh.AsSpan(1), .. buffered.AsSpan(6 * Block)], read);
    }

    [Fact]
    public unsafe void A_direct_write_from_an_aligned_buffer_goes_straight_to_the_file()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Path);
        File.WriteAllBytes(Path.Combine(dir.Path, "f"), []);
        using var direct = DirectFile.TryOpen(Path.Combine(dir.Path, "f"));
        Assert.SkipWhen(direct is null, "the filesystem under the temp directory refuses O_DIRECT");
        byte* aligned = (byte*)NativeMemory.AlignedAlloc(2 << 20, DirectFile.Alignment);
        try
        {
            var source = new Span<byte>(aligned, 2 << 20); // larger than one pooled buffer
            Pattern(2 << 20, 5).CopyTo(source);
            Assert.True(direct.TryWrite(Block, source));
            Assert.Equal(Pattern(2 << 20, 5), File.ReadAllBytes(Path.Combine(dir.Path, "f")).AsSpan(Block).ToArray());
        }
        finally
        {
            NativeMemory.AlignedFree(aligned);
        }
    }

    [Fact]
    public void Unaligned_offsets_and_lengths_fall_back_to_a_buffered_write()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Path);
        using (var direct = DirectFile.TryOpen(Path.Combine(dir.Path, "missing")))
        {
            Assert.Null(direct); // nothing to open: the caller writes through the cache
        }
        var medium = new FileMedium(dir.Path);
        using var file = medium.Open("f", create: true);
        file.WriteUncachedAt(512, Pattern(Block, 1));       // offset not a multiple of 4 KiB
        file.WriteUncachedAt(3 * Block, Pattern(100, 2));   // length not a multiple of 4 KiB
        file.WriteUncachedAt(Block * 2, Pattern(Block, 3)); // aligned: direct where the filesystem allows
        var read = new byte[3 * Block + 100];
        Assert.Equal(read.Length, file.ReadAt(0, read));
        var expected = new byte[read.Length];
        Pattern(Block, 1).CopyTo(expected, 512);
        Pattern(Block, 3).CopyTo(expected, 2 * Block);
        Pattern(100, 2).CopyTo(expected, 3 * Block);
        Assert.Equal(expected, read);

        using var probe = DirectFile.TryOpen(Path.Combine(dir.Path, "f"));
        Assert.SkipWhen(probe is null, "the filesystem under the temp directory refuses O_DIRECT");
        Assert.False(probe.TryWrite(512, Pattern(Block, 4)));
        Assert.False(probe.TryWrite(0, Pattern(100, 4)));
        Assert.Equal(0, probe.WrittenBytes);
    }

    private static string DataPath(TempDir dir) => Path.Combine(dir.Path, PoolFormat.DataFile);

    private static void SkipUnlessDirectIo(string directory)
    {
        using var direct = DirectFile.TryOpen(Path.Combine(directory, PoolFormat.DataFile));
        Assert.SkipWhen(direct is null, "the filesystem under the temp directory refuses O_DIRECT");
    }

    /// <summary>Flips a byte of every copy of a block in a closed pool's data file; returns how many it found.</summary>
    private static int FlipByteOf(string dataPath, byte[] block)
    {
        var file = File.ReadAllBytes(dataPath);
        int found = 0;
        for (int at = 0; at + Block <= file.Length; at += Block)
        {
            if (file.AsSpan(at, Block).SequenceEqual(block))
            {
                file[at + 1000] ^= 0x40;
                found++;
            }
        }
        File.WriteAllBytes(dataPath, file);
        return found;
    }
}

/// <summary>How much of a file the page cache holds (mmap + mincore), to tell writes that went past it from those that did not.</summary>
internal static unsafe partial class PageCache
{
    private const int ReadOnly = 0;
    private const int ProtRead = 1;
    private const int MapShared = 1;

    public static long ResidentBytes(string path)
    {
        long length = new FileInfo(path).Length;
        if (length == 0)
        {
            return 0;
        }
        int fd = Open(path, ReadOnly); // open(2) itself: .NET's open would take a lock the open pool holds
        Assert.True(fd >= 0, $"cannot open {path} (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            void* map = Mmap(null, (nuint)length, ProtRead, MapShared, fd, 0);
            Assert.True(map != (void*)-1, $"mmap of {path} failed (errno {Marshal.GetLastPInvokeError()})");
            try
            {
                long pages = (length + Environment.SystemPageSize - 1) / Environment.SystemPageSize;
                var vector = new byte[pages];
                fixed (byte* v = vector)
                {
                    Assert.Equal(0, Mincore(map, (nuint)length, v));
                }
                return vector.Count(b => (b & 1) != 0) * (long)Environment.SystemPageSize;
            }
            finally
            {
                _ = Munmap(map, (nuint)length);
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(void* address, nuint length);

    [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    private static partial int Mincore(void* address, nuint length, byte* vector);
}

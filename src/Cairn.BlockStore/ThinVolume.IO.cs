using System.Runtime.CompilerServices;
using Cairn.Core;

namespace Cairn.BlockStore;

internal sealed partial class ThinVolume
{
    private void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        MapReads.Read(_pool, _map, offset, destination, this);
    }

    /// <param name="uncached">Cold data (<see cref="WriteFlags.Uncached"/>): runs of whole blocks go past the page cache;
    /// partial blocks are merged in memory and written through it like any other.</param>
    private void Write(long offset, ReadOnlySpan<byte> source, bool uncached)
    {
        CheckRange(offset, source.Length);
        _pool.ThrowIfUnusable();
        int done = 0;
        while (done < source.Length)
        {
            long pos = offset + done;
            int inBlock = (int)(pos & (BlockBytes - 1));
            int n = Math.Min(BlockBytes - inBlock, source.Length - done);
            if (n < BlockBytes && inBlock == 0 && pos + n == SizeBytes)
            {
                WriteLastBlock(pos >> BlockShift, source.Slice(done, n), pos + n);
            }
            else if (n < BlockBytes)
            {
                ModifyBlock(pos >> BlockShift, inBlock, source.Slice(done, n), n);
            }
            else
            {
                int wholeBlocks = Math.Min(MaxRunBlocks, (source.Length - done) / BlockBytes);
                n = WriteWholeBlocks(pos >> BlockShift, source.Slice(done, wholeBlocks * BlockBytes), uncached);
            }
            done += n;
        }
    }

    /// <summary>Redirect-on-write of whole blocks: fresh blocks, data written, then the map points at them. Returns bytes written.</summary>
    /// <param name="whileSizeIs">When 0 or more, links only while the volume is still that big, else gives the blocks
    /// back and returns 0 (a padded last block must not zero bytes a grow just brought into the volume).</param>
    [SkipLocalsInit]
    private int WriteWholeBlocks(long lba, ReadOnlySpan<byte> source, bool uncached, long whileSizeIs = -1)
    {
        bool overwrite = ExtentMap.IsData(_map.Get(lba));
        int count = _pool.Allocate(source.Length / BlockBytes, overwrite, out uint physical);
        var chunk = source[..(count * BlockBytes)];
        try
        {
            _pool.WriteData(physical, chunk, uncached);
        }
        catch
        {
            _pool.ReleaseUnreferenced(physical, count);
            throw;
        }
        Span<ulong> entries = stackalloc ulong[MaxRunBlocks];
        Span<uint> crcs = stackalloc uint[MaxRunBlocks];
        Crc32C.ComputeBlocks(chunk, BlockBytes, crcs);
        for (int i = 0; i < count; i++)
        {
            entries[i] = ExtentMap.DataEntry(physical + (uint)i, crcs[i]);
        }
        lock (_lock)
        {
            if (_deleted || _pool.IsClosed)
            {
                _pool.ReleaseUnreferenced(physical, count);
                ThrowIfDeleted();
            }
            if (whileSizeIs >= 0 && _sizeBytes != whileSizeIs)
            {
                _pool.ReleaseUnreferenced(physical, count);
                return 0;
            }
            Link(lba, entries[..count]);
        }
        _pool.AfterAppend();
        return chunk.Length;
    }

    /// <summary>
    /// All of a volume's last, partial block is written as a whole block padded with zeros (bytes past the end always
    /// read as zeros, as in <see cref="Zero"/>): like any whole-block write it replaces a copy that fails its checksum
    /// instead of failing to merge with it, which is how a repair rewrites it.
    /// </summary>
    [SkipLocalsInit]
    private void WriteLastBlock(long lba, ReadOnlySpan<byte> part, long sizeBytes)
    {
        Span<byte> block = stackalloc byte[BlockBytes];
        part.CopyTo(block);
        block[part.Length..].Clear();
        if (WriteWholeBlocks(lba, block, uncached: false, sizeBytes) == 0)
        {
            ModifyBlock(lba, 0, part, part.Length); // the volume grew meanwhile: the block is no longer its last
        }
    }

    /// <summary>Points map entries at freshly written blocks and journals it. Caller holds the volume lock.</summary>
    private void Link(long lba, ReadOnlySpan<ulong> entries)
    {
        int freed = 0;
        int replaced = 0;
        lock (_pool.BatchLock)
        {
            var batch = _pool.OpenBatch;
            var map = _map;
            for (int i = 0; i < entries.Length; i++)
            {
                ulong old = map.Set(lba + i, entries[i]);
                batch.AddMap(Index, lba + i, entries[i]);
                if (ExtentMap.IsData(old))
                {
                    replaced++;
                    if (!SharedWithParent(lba + i, old)) // a snapshot's block stays until the snapshot goes
                    {
                        batch.Frees.Add(ExtentMap.PhysicalOf(old));
                        freed++;
                    }
                }
            }
        }
        _pool.CountPendingFrees(freed);
        _allocatedBlocks += entries.Length - replaced;
    }

    /// <summary>
    /// Read-modify-write of part of one block into a fresh block. Optimistic: if another writer changed the entry
    /// meanwhile, the new block is dropped and the merge redone on top of the newer content.
    /// <paramref name="part"/> empty means zero <paramref name="length"/> bytes.
    /// </summary>
    [SkipLocalsInit]
    private void ModifyBlock(long lba, int inBlock, ReadOnlySpan<byte> part, int length)
    {
        Span<byte> block = stackalloc byte[BlockBytes];
        Span<ulong> entry = stackalloc ulong[1];
        while (true)
        {
            ulong before = _map.Get(lba);
            if (part.IsEmpty && !ExtentMap.IsData(before))
            {
                return; // zeroing a block that already reads as zeros
            }
            _pool.Allocate(1, ExtentMap.IsData(before), out uint physical);
            try
            {
                before = LoadBlock(lba, block);
                if (part.IsEmpty)
                {
                    block.Slice(inBlock, length).Clear();
                }
                else
                {
                    part.CopyTo(block[inBlock..]);
                }
                _pool.WriteData(physical, block);
            }
            catch
            {
                _pool.ReleaseUnreferenced(physical, 1);
                throw;
            }
            entry[0] = ExtentMap.DataEntry(physical, Crc32C.Compute(block));
            lock (_lock)
            {
                if (_deleted || _pool.IsClosed || _map.Get(lba) != before)
                {
                    _pool.ReleaseUnreferenced(physical, 1);
                    ThrowIfDeleted();
                    continue; // lost a race with another writer of this block: merge again
                }
                Link(lba, entry);
            }
            _pool.AfterAppend();
            return;
        }
    }

    /// <summary>Current content of a block (zeros for holes), verified; returns the entry it came from.</summary>
    private ulong LoadBlock(long lba, Span<byte> block)
    {
        int epoch = _pool.EnterEpoch();
        try
        {
            ulong entry = _map.Get(lba);
            if (ExtentMap.IsData(entry))
            {
                _pool.ReadData(ExtentMap.PhysicalOf(entry), block);
                VerifyBlock(block, entry, lba);
            }
            else
            {
                block.Clear();
            }
            return entry;
        }
        finally
        {
            _pool.ExitEpoch(epoch);
        }
    }

    /// <summary>
    /// TRIM and WRITE_ZEROES: whole blocks become holes (or allocated-zero entries with NoHole) by a map change
    /// alone; partial blocks at the edges are zeroed by read-modify-write, which is why FastOnly refuses them.
    /// A block that ends exactly at the volume's end counts as whole (bytes past the end are always zero).
    /// </summary>
    private void Zero(long offset, long length, ZeroFlags zeroFlags)
    {
        CheckRange(offset, length);
        _pool.ThrowIfUnusable();
        long end = offset + length;
        long size = SizeBytes;
        long firstWhole = (offset + BlockBytes - 1) >> BlockShift;
        long endWhole = end == size ? (end + BlockBytes - 1) >> BlockShift : end >> BlockShift;
        bool hasWhole = endWhole > firstWhole;
        long headEnd = hasWhole ? firstWhole << BlockShift : end;
        long tailStart = hasWhole ? Math.Min(end, endWhole << BlockShift) : end;
        if ((zeroFlags & ZeroFlags.FastOnly) != 0 && (headEnd > offset || end > tailStart))
        {
            ThrowHelper.Throw(BlockError.NotSupported,
                $"fast zero of [{offset}, +{length}) in volume '{Id}' needs read-modify-write of partial {BlockBytes}-byte blocks");
        }
        ZeroBytes(offset, headEnd);
        if (hasWhole)
        {
            bool keepAllocated = (zeroFlags & ZeroFlags.NoHole) != 0;
            lock (_lock)
            {
                ThrowIfDeleted();
                int freed;
                lock (_pool.BatchLock)
                {
                    var batch = _pool.OpenBatch;
                    batch.AddRange(keepAllocated ? Format.JournalRecord.Zero : Format.JournalRecord.Trim, Index, firstWhole, endWhole - firstWhole);
                    // NoHole asks for the space to stay allocated, so only a plain TRIM/WRITE_ZEROES punches.
                    freed = UnlinkRange(firstWhole, endWhole - firstWhole, keepAllocated ? ExtentMap.ZeroEntry : 0, batch, punch: !keepAllocated);
                }
                _pool.CountPendingFrees(freed);
            }
            _pool.AfterAppend();
        }
        ZeroBytes(tailStart, end);
    }

    private void ZeroBytes(long from, long to)
    {
        while (from < to)
        {
            int inBlock = (int)(from & (BlockBytes - 1));
            int n = (int)Math.Min(BlockBytes - inBlock, to - from);
            ModifyBlock(from >> BlockShift, inBlock, [], n);
            from += n;
        }
    }

    private int DescribeAllocation(long offset, long length, Span<AllocationExtent> extents)
    {
        CheckRange(offset, length);
        return MapReads.DescribeAllocation(_map, offset, length, extents);
    }
}

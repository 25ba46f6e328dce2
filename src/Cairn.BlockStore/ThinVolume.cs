using System.Runtime.CompilerServices;
using Cairn.BlockStore.Format;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>
/// A thin volume: an <see cref="ExtentMap"/> over the pool's shared data file. Reads are lock-free (map entries
/// are read atomically inside a read epoch); writers go to fresh blocks and take the volume lock only to update
/// the map and append the matching journal record. IO methods complete synchronously (pread/pwrite) and return
/// completed ValueTasks.
/// </summary>
internal sealed partial class ThinVolume : StoredVolume
{
    private const int BlockBytes = PoolFormat.BlockBytes;
    private const int BlockShift = PoolFormat.BlockShift;
    /// <summary>Largest run moved by one pread/pwrite (1 MiB); bounds stack use for per-block CRCs.</summary>
    private const int MaxRunBlocks = 256;

    private readonly BlockPool _pool;
    private readonly Lock _lock = new();
    private readonly ExtentMap _map;
    private long _sizeBytes;
    private long _allocatedBlocks;
    private long _checksumErrors;
    private volatile bool _deleted;

    public ThinVolume(BlockPool pool, uint index, string id, long sizeBytes, DateTimeOffset createdAt, ExtentMap map, long allocatedBlocks)
    {
        _pool = pool;
        Index = index;
        Id = id;
        _sizeBytes = sizeBytes;
        CreatedAt = createdAt;
        _map = map;
        _allocatedBlocks = allocatedBlocks;
    }

    public uint Index { get; }
    public override string Id { get; }
    public DateTimeOffset CreatedAt { get; }
    public override long SizeBytes => Volatile.Read(ref _sizeBytes);
    public override long AllocatedBytes => Volatile.Read(ref _allocatedBlocks) * BlockBytes;
    public override long ChecksumErrors => Interlocked.Read(ref _checksumErrors);
    public override int PreferredBlockSizeBytes => BlockBytes;
    public override bool IsReadOnly => false;

    /// <summary>Size and map for a checkpoint; the map is read lock-free afterwards (fuzzy snapshot).</summary>
    internal (long SizeBytes, ExtentMap Map) SnapshotMetadata()
    {
        lock (_lock)
        {
            return (_sizeBytes, _map);
        }
    }

    public override ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }
        try
        {
            Read(offset, destination.Span);
            return ValueTask.CompletedTask;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ThrowHelper.Translate(ex, $"read of volume '{Id}'"));
        }
    }

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }
        try
        {
            Write(offset, source.Span);
            if ((flags & WriteFlags.ForceUnitAccess) != 0)
            {
                _pool.Flush();
            }
            return ValueTask.CompletedTask;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ThrowHelper.Translate(ex, $"write to volume '{Id}'"));
        }
    }

    public override ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            ThrowIfDeleted();
            _pool.Flush();
            return ValueTask.CompletedTask;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ThrowHelper.Translate(ex, $"flush of volume '{Id}'"));
        }
    }

    public override ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        => WriteZeroesAsync(offset, length, ZeroFlags.None, flags, cancellationToken);

    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        try
        {
            Zero(offset, length, zeroFlags);
            if ((flags & WriteFlags.ForceUnitAccess) != 0)
            {
                _pool.Flush();
            }
            return ValueTask.CompletedTask;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ThrowHelper.Translate(ex, $"zeroing in volume '{Id}'"));
        }
    }

    public override ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
    {
        try
        {
            return ValueTask.FromResult(DescribeAllocation(offset, length, extents.Span));
        }
        catch (Exception ex)
        {
            return ValueTask.FromException<int>(ThrowHelper.Translate(ex, $"allocation query of volume '{Id}'"));
        }
    }

    public override void Grow(long newSizeBytes)
    {
        ThrowIfDeleted();
        _pool.ThrowIfUnusable();
        lock (_lock)
        {
            long size = _sizeBytes;
            if (newSizeBytes < size)
            {
                throw new ArgumentOutOfRangeException(nameof(newSizeBytes), newSizeBytes,
                    $"volume '{Id}' is {size} bytes; shrinking to {newSizeBytes} bytes is not supported (volumes only grow)");
            }
            if (newSizeBytes > BlockPool.MaxVolumeBytes)
            {
                throw new ArgumentOutOfRangeException(nameof(newSizeBytes), newSizeBytes, $"volume size is limited to {BlockPool.MaxVolumeBytes} bytes");
            }
            if (newSizeBytes == size)
            {
                return;
            }
            _map.Grow(VolumeImage.BlocksFor(newSizeBytes));
            lock (_pool.BatchLock)
            {
                _pool.OpenBatch.AddGrow(Index, newSizeBytes);
            }
            Volatile.Write(ref _sizeBytes, newSizeBytes);
        }
        _pool.Flush();
    }

    /// <summary>Unlinks every block (freed once the delete record is durable) and fails all further IO with Shutdown.</summary>
    internal void MarkDeleted()
    {
        lock (_lock)
        {
            _deleted = true;
            lock (_pool.BatchLock)
            {
                var batch = _pool.OpenBatch;
                batch.AddDelete(Index);
                int freed = UnlinkRange(0, _map.BlockCount, 0, batch, punch: true);
                _pool.CountPendingFrees(freed);
            }
        }
    }

    /// <summary>
    /// Sets entries of a range to hole or zero; returns how many data blocks were unlinked. Caller holds both locks.
    /// <paramref name="punch"/>: the user gave the space back, so the freed blocks are punched out of the data file.
    /// </summary>
    private int UnlinkRange(long block, long count, ulong entry, Format.JournalBatch batch, bool punch)
    {
        int freed = 0;
        for (long b = block; b < block + count; b++)
        {
            if (_map.IsPageEmpty(b) && entry == 0)
            {
                b |= ExtentMap.PageEntries - 1;
                continue;
            }
            ulong old = _map.Set(b, entry);
            if (ExtentMap.IsData(old))
            {
                (punch ? batch.Discards : batch.Frees).Add(ExtentMap.PhysicalOf(old));
                freed++;
            }
        }
        _allocatedBlocks -= freed;
        return freed;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckRange(long offset, long length)
    {
        long size = Volatile.Read(ref _sizeBytes);
        if (_deleted || _pool.IsClosed || offset < 0 || length < 0 || offset > size - length)
        {
            ThrowBadRange(offset, length);
        }
    }

    private void ThrowBadRange(long offset, long length)
    {
        ThrowIfDeleted();
        _pool.ThrowIfUnusable();
        ThrowHelper.Throw(BlockError.InvalidArgument,
            $"range [{offset}, +{length}) is outside volume '{Id}' of {SizeBytes} bytes");
    }

    private void ThrowIfDeleted()
    {
        if (_deleted)
        {
            ThrowHelper.Throw(BlockError.Shutdown, $"volume '{Id}' was deleted");
        }
        if (_pool.IsClosed)
        {
            ThrowHelper.Throw(BlockError.Shutdown, $"pool '{_pool.Name}' holding volume '{Id}' is closed");
        }
    }

    private void VerifyBlock(ReadOnlySpan<byte> block, ulong entry, long lba)
    {
        if (Core.Crc32C.Compute(block) != ExtentMap.CrcOf(entry))
        {
            ReportChecksumError(lba, ExtentMap.PhysicalOf(entry));
        }
    }

    private void ReportChecksumError(long lba, uint physicalBlock)
    {
        Interlocked.Increment(ref _checksumErrors);
        _pool.ReportChecksumError(this, lba, physicalBlock);
        ThrowHelper.Throw(BlockError.Io,
            $"checksum mismatch in volume '{Id}' at byte {lba * BlockBytes} (physical block {physicalBlock}): this replica's copy is corrupt");
    }
}

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
internal sealed partial class ThinVolume : StoredVolume, IChecksumReporter
{
    private const int BlockBytes = PoolFormat.BlockBytes;
    private const int BlockShift = PoolFormat.BlockShift;
    /// <summary>Largest run moved by one pwrite (1 MiB); bounds stack use for per-block CRCs.</summary>
    private const int MaxRunBlocks = MapReads.MaxRunBlocks;

    private readonly BlockPool _pool;
    private readonly Lock _lock = new();
    /// <summary>Replaced only by a revert (under the batch lock); readers load it once per request.</summary>
    private volatile ExtentMap _map;
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

    /// <summary>The live map; changes only under the pool's batch lock.</summary>
    internal ExtentMap Map => _map;

    /// <summary>The snapshot this volume's live map descends from (its newest snapshot, or a clone's source); null for none.</summary>
    /// <remarks>Changed under both the pool's volumes lock and this volume's lock; writers read it under this volume's lock.</remarks>
    internal VolumeSnapshot? Parent { get; set; }

    /// <summary>This volume's snapshots, oldest first. Guarded by the pool's volumes lock.</summary>
    internal List<VolumeSnapshot> Snapshots { get; } = [];

    /// <summary>The volume's lock: held while the map and the parent change together.</summary>
    internal Lock SyncRoot => _lock;

    internal bool IsDeleted => _deleted;

    /// <summary>True when the parent snapshot still holds the block <paramref name="entry"/> names: dropping it here frees nothing.</summary>
    internal bool SharedWithParent(long lba, ulong entry) => Parent is { } p && ExtentMap.SameBlock(p.Map.GetOrHole(lba), entry);

    /// <summary>
    /// Makes this volume's content that of <paramref name="source"/> (revert, clone): the live map becomes a fork of the
    /// snapshot's map, grown to the volume's size. Caller holds the volumes lock, this volume's lock and the batch lock.
    /// </summary>
    internal void AdoptSnapshot(VolumeSnapshot source)
    {
        var map = source.Map.Fork();
        map.Grow(VolumeImage.BlocksFor(_sizeBytes));
        _map = map;
        _allocatedBlocks = source.ReferencedBlocks;
        Parent?.RemoveChild(this);
        Parent = source;
        source.ChildVolumes.Add(this);
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
            Write(offset, source.Span, (flags & WriteFlags.Uncached) != 0);
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
            lock (_pool.BatchLock)
            {
                // Map, size and record change together: a checkpoint captures all three or none.
                _map.Grow(VolumeImage.BlocksFor(newSizeBytes));
                _pool.OpenBatch.AddGrow(Index, newSizeBytes);
                Volatile.Write(ref _sizeBytes, newSizeBytes);
            }
        }
        _pool.Flush();
    }

    /// <summary>
    /// Fails all further IO with Shutdown and frees every block the parent snapshot does not hold (once the delete
    /// record is durable). The map itself is left alone: copying shared pages only to clear them would be wasted work.
    /// Caller holds the pool's volumes lock.
    /// </summary>
    internal void MarkDeleted()
    {
        lock (_lock)
        {
            _deleted = true;
            int freed;
            lock (_pool.BatchLock)
            {
                var batch = _pool.OpenBatch;
                batch.AddDelete(Index);
                freed = DiscardExclusiveBlocks(batch);
            }
            _allocatedBlocks = 0;
            _pool.CountPendingFrees(freed);
            Parent?.RemoveChild(this);
            Parent = null;
        }
    }

    /// <summary>Queues the live map's blocks that the parent does not hold for punching; the map is being dropped. Caller holds the batch lock.</summary>
    internal int DiscardExclusiveBlocks(Format.JournalBatch batch)
    {
        int freed = 0;
        ExtentMap[] neighbours = Parent is { } p ? [p.Map] : [];
        Lineage.ForEachExclusive(_map, neighbours, (_, entry) =>
        {
            batch.Discards.Add(ExtentMap.PhysicalOf(entry));
            freed++;
        });
        return freed;
    }

    /// <summary>
    /// Sets entries of a range to hole or zero; returns how many data blocks were unlinked. Caller holds both locks.
    /// <paramref name="punch"/>: the user gave the space back, so the freed blocks are punched out of the data file.
    /// </summary>
    private int UnlinkRange(long block, long count, ulong entry, Format.JournalBatch batch, bool punch)
    {
        int freed = 0;
        long unlinked = 0;
        var map = _map;
        for (long b = block; b < block + count; b++)
        {
            if (map.IsPageEmpty(b) && entry == 0)
            {
                b |= ExtentMap.PageEntries - 1;
                continue;
            }
            ulong old = map.Set(b, entry);
            if (ExtentMap.IsData(old))
            {
                unlinked++;
                if (!SharedWithParent(b, old))
                {
                    (punch ? batch.Discards : batch.Frees).Add(ExtentMap.PhysicalOf(old));
                    freed++;
                }
            }
        }
        _allocatedBlocks -= unlinked;
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

    private void VerifyBlock(ReadOnlySpan<byte> block, ulong entry, long lba) => MapReads.Verify(block, entry, lba, this);

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    public void ReportChecksumError(long lba, uint physicalBlock)
    {
        Interlocked.Increment(ref _checksumErrors);
        _pool.ReportChecksumError(Id, lba, physicalBlock);
        ThrowHelper.Throw(BlockError.Io,
            $"checksum mismatch in volume '{Id}' at byte {lba * BlockBytes} (physical block {physicalBlock}): this replica's copy is corrupt");
    }
}

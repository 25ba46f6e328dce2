using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>
/// What a snapshot holds and costs. <paramref name="ExclusiveBytes"/> is what deleting it gives back (blocks neither
/// its parent nor its children hold); <see cref="SharedBytes"/> is the rest of what it shows.
/// </summary>
public sealed record SnapshotInfo(string VolumeId, string Name, DateTimeOffset CreatedAt, long SizeBytes, long ReferencedBytes, long ExclusiveBytes)
{
    public long SharedBytes => ReferencedBytes - ExclusiveBytes;
}

/// <summary>A snapshot opened for reading (backup, export): a read-only block device whose content never changes.</summary>
public abstract class StoredSnapshot : IBlockDevice
{
    public abstract string VolumeId { get; }
    public abstract string Name { get; }
    public abstract DateTimeOffset CreatedAt { get; }

    public abstract long SizeBytes { get; }
    public int PreferredBlockSizeBytes => Format.PoolFormat.BlockBytes;
    public bool IsReadOnly => true;
    public abstract ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default);
    public abstract ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        => Refuse("write to");

    /// <summary>Nothing to make durable: a snapshot is durable from the moment it exists.</summary>
    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        => Refuse("trim of");

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        => Refuse("zeroing in");

    private ValueTask Refuse(string what) => ValueTask.FromException(new BlockDeviceException(BlockError.ReadOnly,
        $"{what} snapshot '{VolumeId}@{Name}' refused: snapshots are read-only (clone it to get a writable volume)"));
}

/// <summary>A <see cref="VolumeSnapshot"/> as a device: reads go through the snapshot's frozen map.</summary>
internal sealed class SnapshotVolume(BlockPool pool, VolumeSnapshot snapshot) : StoredSnapshot, IChecksumReporter
{
    public override string VolumeId => snapshot.OwnerId;
    public override string Name => snapshot.Name;
    public override DateTimeOffset CreatedAt => snapshot.CreatedAt;
    public override long SizeBytes => snapshot.SizeBytes;

    public override ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        try
        {
            CheckRange(offset, destination.Length);
            MapReads.Read(pool, snapshot.Map, offset, destination.Span, this);
            return ValueTask.CompletedTask;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ThrowHelper.Translate(ex, $"read of snapshot '{VolumeId}@{Name}'"));
        }
    }

    public override ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
    {
        try
        {
            CheckRange(offset, length);
            return ValueTask.FromResult(MapReads.DescribeAllocation(snapshot.Map, offset, length, extents.Span));
        }
        catch (Exception ex)
        {
            return ValueTask.FromException<int>(ThrowHelper.Translate(ex, $"allocation query of snapshot '{VolumeId}@{Name}'"));
        }
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    public void ReportChecksumError(long lba, uint physicalBlock)
    {
        pool.ReportChecksumError($"{VolumeId}@{Name}", lba, physicalBlock);
        ThrowHelper.Throw(BlockError.Io,
            $"checksum mismatch in snapshot '{VolumeId}@{Name}' at byte {lba * Format.PoolFormat.BlockBytes} (physical block {physicalBlock}): this replica's copy is corrupt");
    }

    private void CheckRange(long offset, long length)
    {
        if (snapshot.Deleted)
        {
            ThrowHelper.Throw(BlockError.Shutdown, $"snapshot '{VolumeId}@{Name}' was deleted");
        }
        if (pool.IsClosed)
        {
            ThrowHelper.Throw(BlockError.Shutdown, $"pool '{pool.Name}' holding snapshot '{VolumeId}@{Name}' is closed");
        }
        if (offset < 0 || length < 0 || offset > SizeBytes - length)
        {
            ThrowHelper.Throw(BlockError.InvalidArgument, $"range [{offset}, +{length}) is outside snapshot '{VolumeId}@{Name}' of {SizeBytes} bytes");
        }
    }
}

using Cairn.Core;

namespace Cairn.BlockStore;

public sealed record StoredVolumeInfo(string Id, long SizeBytes, long AllocatedBytes, DateTimeOffset CreatedAt);

/// <summary>A thin, checksummed volume inside a pool.</summary>
public abstract class StoredVolume : IBlockDevice
{
    public abstract string Id { get; }
    public abstract long AllocatedBytes { get; }
    /// <summary>Blocks that failed checksum verification on read since the pool was opened.</summary>
    public abstract long ChecksumErrors { get; }
    /// <summary>Grows the volume online; a smaller size throws <see cref="ArgumentOutOfRangeException"/>.</summary>
    public abstract void Grow(long newSizeBytes);

    public abstract long SizeBytes { get; }
    public abstract int PreferredBlockSizeBytes { get; }
    public abstract bool IsReadOnly { get; }
    public abstract ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default);
    public abstract ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);
    public abstract ValueTask FlushAsync(CancellationToken cancellationToken = default);
    public abstract ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);
    public abstract ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);
    public abstract ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default);
}

/// <summary>Raised when a block fails checksum verification on read.</summary>
public sealed class ChecksumErrorEventArgs(string volumeId, long offsetBytes, long physicalBlock) : EventArgs
{
    public string VolumeId { get; } = volumeId;
    /// <summary>Byte offset of the bad block within the volume.</summary>
    public long OffsetBytes { get; } = offsetBytes;
    public long PhysicalBlock { get; } = physicalBlock;
}

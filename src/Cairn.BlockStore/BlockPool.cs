using Cairn.Core;

namespace Cairn.BlockStore;

// API SKETCH ONLY (to be replaced by the block store implementation): the public surface other layers code against.

/// <summary>A pool: one directory on a node's drive holding the replicas (stored volumes) placed there.</summary>
public sealed class BlockPool : IDisposable
{
    /// <summary>Creates a new pool in an empty or missing directory. <paramref name="capacityBytes"/> null = the filesystem's free space.</summary>
    public static BlockPool Create(string directory, string name, long? capacityBytes = null) => throw new NotImplementedException();

    /// <summary>Opens an existing pool, checking its format version and recovering after a crash.</summary>
    public static BlockPool Open(string directory) => throw new NotImplementedException();

    public string Name => throw new NotImplementedException();
    public string Directory => throw new NotImplementedException();
    public long CapacityBytes => throw new NotImplementedException();
    public long UsedBytes => throw new NotImplementedException();
    public long FreeBytes => CapacityBytes - UsedBytes;

    public IReadOnlyList<StoredVolumeInfo> ListVolumes() => throw new NotImplementedException();

    /// <summary>Creates a thin volume; costs no space until written. Throws <see cref="InvalidOperationException"/> when the id exists.</summary>
    public StoredVolume CreateVolume(string volumeId, long sizeBytes) => throw new NotImplementedException();

    public bool TryGetVolume(string volumeId, out StoredVolume? volume) => throw new NotImplementedException();

    /// <summary>Deletes a volume and frees its space. Open IO on it fails with <see cref="BlockError.Shutdown"/>.</summary>
    public void DeleteVolume(string volumeId) => throw new NotImplementedException();

    public void Dispose() => throw new NotImplementedException();
}

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

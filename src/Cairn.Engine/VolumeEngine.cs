using Cairn.Core;

namespace Cairn.Engine;

/// <summary>
/// The one place a volume's IO passes through before it reaches storage. Today it forwards to the
/// local stored volume; it is the seam where QoS, then encryption, then replication (epoch-fenced)
/// will stack, so frontends already hold an engine and never a stored volume directly.
/// </summary>
public sealed class VolumeEngine : IBlockDevice
{
    private readonly IBlockDevice _inner;

    public VolumeEngine(string volumeName, IBlockDevice inner)
    {
        ArgumentException.ThrowIfNullOrEmpty(volumeName);
        ArgumentNullException.ThrowIfNull(inner);
        VolumeName = volumeName;
        _inner = inner;
    }

    public string VolumeName { get; }

    public long SizeBytes => _inner.SizeBytes;

    public int PreferredBlockSizeBytes => _inner.PreferredBlockSizeBytes;

    public bool IsReadOnly => _inner.IsReadOnly;

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
        _inner.ReadAsync(offset, destination, cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        _inner.WriteAsync(offset, source, flags, cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) =>
        _inner.FlushAsync(cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        _inner.TrimAsync(offset, length, flags, cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        _inner.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken);

    public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) =>
        _inner.GetAllocationAsync(offset, length, extents, cancellationToken);
}

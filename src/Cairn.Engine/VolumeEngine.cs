using Cairn.Core;

namespace Cairn.Engine;

/// <summary>
/// The one place a volume's IO passes through before it reaches storage. Today it forwards to the
/// local stored volume; it is the seam where QoS, then encryption, then replication (epoch-fenced)
/// will stack, so frontends already hold an engine and never a stored volume directly.
/// </summary>
/// <remarks>
/// Scheduling: frontends run many connections on a few IO threads and execute a request inline when the device
/// completes synchronously. Small reads and writes should (they cost microseconds and allocate nothing), but work
/// that blocks for long — a flush or FUA write waiting on fdatasync, a large transfer, a wide trim — would stall
/// every connection on that IO thread and serialize one connection's large requests on one core. Those run on the
/// thread pool instead, so they overlap across cores and the frontend keeps serving; the frontend sees an
/// asynchronous completion and answers out of order, which every block protocol allows.
/// </remarks>
public sealed class VolumeEngine : IBlockDevice
{
    /// <summary>Transfers at least this large run off the IO thread; below it, inline execution is cheaper than the hop.</summary>
    public const int OffloadTransferBytes = 128 * 1024;

    /// <summary>Trims and zeroing ranges at least this large run off the IO thread (they may punch holes in files).</summary>
    public const long OffloadRangeBytes = 16L << 20;

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
        destination.Length < OffloadTransferBytes
            ? _inner.ReadAsync(offset, destination, cancellationToken)
            : Offload(() => _inner.ReadAsync(offset, destination, cancellationToken), cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        source.Length < OffloadTransferBytes && (flags & WriteFlags.ForceUnitAccess) == 0
            ? _inner.WriteAsync(offset, source, flags, cancellationToken)
            : Offload(() => _inner.WriteAsync(offset, source, flags, cancellationToken), cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) =>
        Offload(() => _inner.FlushAsync(cancellationToken), cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        length < OffloadRangeBytes && (flags & WriteFlags.ForceUnitAccess) == 0
            ? _inner.TrimAsync(offset, length, flags, cancellationToken)
            : Offload(() => _inner.TrimAsync(offset, length, flags, cancellationToken), cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        length < OffloadRangeBytes && (flags & WriteFlags.ForceUnitAccess) == 0
            ? _inner.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken)
            : Offload(() => _inner.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken), cancellationToken);

    public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) =>
        _inner.GetAllocationAsync(offset, length, extents, cancellationToken);

    /// <summary>Runs <paramref name="operation"/> on the thread pool; it allocates a task, which is fine at these sizes and rates.</summary>
    private static ValueTask Offload(Func<ValueTask> operation, CancellationToken cancellationToken) =>
        new(Task.Run(async () => await operation(), cancellationToken));
}

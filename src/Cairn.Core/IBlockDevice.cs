namespace Cairn.Core;

/// <summary>
/// The contract between a frontend (NBD, iSCSI, NVMe/TCP) and whatever serves a volume's
/// blocks. A frontend never learns whether the device is local, replicated or encrypted.
/// </summary>
/// <remarks>
/// Offsets and lengths are in bytes and need not be block-aligned; implementations
/// read-modify-write partial blocks themselves. Failures surface as <see cref="BlockDeviceException"/>
/// carrying a <see cref="BlockError"/> that frontends map to their wire error codes.
/// Implementations must be safe for concurrent calls from many connections.
/// </remarks>
public interface IBlockDevice
{
    /// <summary>Current size in bytes; may grow while the device is open.</summary>
    long SizeBytes { get; }

    /// <summary>The block size the device stores and checksums; IO aligned to it avoids read-modify-write.</summary>
    int PreferredBlockSizeBytes { get; }

    bool IsReadOnly { get; }

    /// <summary>Fills <paramref name="destination"/> with the bytes at <paramref name="offset"/>. Unwritten space reads as zeros.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default);

    /// <summary>Writes <paramref name="source"/>. With <see cref="WriteFlags.ForceUnitAccess"/> it returns only once the data is durable.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);

    /// <summary>Makes every write that completed before this call durable.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>Discards a range: it reads as zeros afterwards and its space may be freed.</summary>
    ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);

    /// <summary>Makes a range read as zeros, honouring <see cref="ZeroFlags"/>.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default);

    /// <summary>
    /// Describes allocation starting at <paramref name="offset"/>: fills <paramref name="extents"/> with
    /// consecutive runs (adjacent runs of one state merged) covering a prefix of the range, and returns how many it wrote.
    /// At least one run is returned for a non-empty in-range request.
    /// </summary>
    ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default);
}

[Flags]
public enum WriteFlags
{
    None = 0,
    /// <summary>Return only once the written data is durable (NBD FUA, SCSI FUA).</summary>
    ForceUnitAccess = 1,
    /// <summary>
    /// The data is cold (a rebuild's copy): nobody will read it soon, so the device may write it past its cache rather
    /// than keep it there and push out what clients do read. A hint: durability is that of any write.
    /// </summary>
    Uncached = 2,
}

[Flags]
public enum ZeroFlags
{
    None = 0,
    /// <summary>The range must stay allocated (NBD_CMD_FLAG_NO_HOLE): zeros are written, not holes punched.</summary>
    NoHole = 1,
    /// <summary>Fail with <see cref="BlockError.NotSupported"/> rather than zero slowly (NBD_CMD_FLAG_FAST_ZERO).</summary>
    FastOnly = 2,
}

public enum AllocationState : byte
{
    /// <summary>Allocated; holds whatever was written.</summary>
    Data = 0,
    /// <summary>Not allocated; reads as zeros (NBD: HOLE|ZERO).</summary>
    Hole = 1,
    /// <summary>Allocated and known to read as zeros (NBD: ZERO).</summary>
    Zero = 2,
}

public readonly record struct AllocationExtent(long LengthBytes, AllocationState State);

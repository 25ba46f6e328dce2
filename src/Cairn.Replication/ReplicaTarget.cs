using System.Buffers.Binary;
using System.Text;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// One replica as its node serves it: the block device holding its data and the highest epoch it has seen. A sender
/// presents its epoch when it connects and with every request; anything older than what the replica has seen is
/// refused (<see cref="ReplicaStatus.StaleEpoch"/>), so once a new owner has reached the replica, a deposed owner can
/// no longer change it. The epoch is kept in memory: whoever hosts the replica starts it at the epoch the cluster store
/// holds (<see cref="TryAdmit"/>), so after a restart a deposed owner's older epoch is still refused; the store's
/// compare-and-swap on the epoch stays the authority that keeps deposed owners from acknowledging.
/// Growing and snapshots go through <paramref name="control"/>; without one they answer <see cref="ReplicaStatus.NotSupported"/>.
/// </summary>
public sealed class ReplicaTarget(string name, IBlockDevice device, IReplicaVolumeControl? control = null)
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly Lock _lock = new();
    private ulong _epoch;

    public string Name { get; } = name;

    public IBlockDevice Device { get; } = device;

    public IReplicaVolumeControl? Control { get; } = control;

    /// <summary>Where the regions this replica is sent are recorded, for its node to resync others should it be promoted.</summary>
    public WriteHistory? History { get; init; }

    public ulong Epoch
    {
        get
        {
            lock (_lock)
            {
                return _epoch;
            }
        }
    }

    /// <summary>Admits a sender at <paramref name="epoch"/>, raising the replica's epoch to it; false when it is older.</summary>
    public bool TryAdmit(ulong epoch)
    {
        lock (_lock)
        {
            if (epoch < _epoch)
            {
                return false;
            }
            _epoch = epoch;
            return true;
        }
    }

    /// <summary>Runs one request. Reads fill <paramref name="readBuffer"/> (exactly the request's length); a verify uses it as
    /// scratch (at least the request's length and <see cref="ReplicaProtocol.VerifyReplyBytes"/>) and leaves its bitmap at the start;
    /// a snapshot block read fills its first <see cref="ReplicaProtocol.SnapshotBlockBytes"/> (it may be the payload's own memory).</summary>
    public async ValueTask<ReplicaStatus> ExecuteAsync(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readBuffer, CancellationToken cancellationToken)
    {
        if (!TryAdmit(request.Epoch))
        {
            return ReplicaStatus.StaleEpoch;
        }
        var fua = (request.Flags & ReplicaFlags.ForceUnitAccess) != 0 ? WriteFlags.ForceUnitAccess : WriteFlags.None;
        try
        {
            switch (request.Op)
            {
                case ReplicaOp.Read:
                    await Device.ReadAsync(request.Offset, readBuffer, cancellationToken);
                    break;
                case ReplicaOp.Verify:
                    await VerifyAsync(request.Offset, (int)request.Length, readBuffer, cancellationToken);
                    break;
                case ReplicaOp.ReadSnapshotBlock:
                    return await ReadSnapshotBlockAsync(request, payload, readBuffer, cancellationToken);
                case ReplicaOp.VerifySnapshot:
                    return await VerifySnapshotAsync(request, payload, readBuffer, cancellationToken);
                case ReplicaOp.RewriteSnapshotBlock:
                    return RewriteSnapshotBlock(request, payload.Span, readBuffer.Span);
                case ReplicaOp.Write:
                    var cold = (request.Flags & ReplicaFlags.Uncached) != 0 ? WriteFlags.Uncached : WriteFlags.None;
                    await Device.WriteAsync(request.Offset, payload, fua | cold, cancellationToken);
                    break;
                case ReplicaOp.Flush:
                    await Device.FlushAsync(cancellationToken);
                    break;
                case ReplicaOp.Trim:
                    await Device.TrimAsync(request.Offset, request.Length, fua, cancellationToken);
                    break;
                case ReplicaOp.WriteZeroes:
                    var zero = (request.Flags & ReplicaFlags.NoHole) != 0 ? ZeroFlags.NoHole : ZeroFlags.None;
                    await Device.WriteZeroesAsync(request.Offset, request.Length, zero, fua, cancellationToken);
                    break;
                case ReplicaOp.Grow or ReplicaOp.CreateSnapshot or ReplicaOp.DeleteSnapshot or ReplicaOp.DeleteAllSnapshots or ReplicaOp.RevertToSnapshot:
                    return ExecuteControl(request, payload.Span);
                default:
                    return ReplicaStatus.InvalidArgument;
            }
            if (request.Op is ReplicaOp.Write or ReplicaOp.Trim or ReplicaOp.WriteZeroes)
            {
                History?.Mark(request.Offset, request.Op == ReplicaOp.Write ? payload.Length : request.Length);
            }
            return ReplicaStatus.Ok;
        }
        catch (BlockDeviceException e)
        {
            return StatusOf(e.Error);
        }
    }

    /// <summary>
    /// Reads the range, whose blocks the device verifies against their checksums, and leaves in the first 8 bytes of
    /// <paramref name="scratch"/> a bitmap of the 4 KiB blocks that failed with an IO error. The whole range is read at
    /// once; only when that fails is each block read on its own, to tell which.
    /// </summary>
    private ValueTask VerifyAsync(long offset, int length, Memory<byte> scratch, CancellationToken cancellationToken) =>
        VerifyWindowAsync((at, into) => Device.ReadAsync(at, into, cancellationToken), offset, length, scratch);

    /// <summary>
    /// Reads a window through <paramref name="read"/> (which checks each block's checksum) and leaves in the first 8
    /// bytes of <paramref name="scratch"/> the bitmap of its 4 KiB blocks that failed with an IO error. The whole window
    /// is read at once; only when that fails is each block read on its own, to tell which. A block past the end of what
    /// is read (an out-of-range answer) ends the window: there is nothing there to be bad.
    /// </summary>
    private static async ValueTask VerifyWindowAsync(Func<long, Memory<byte>, ValueTask> read, long offset, int length, Memory<byte> scratch)
    {
        const int Block = ReplicaProtocol.VerifyBlockBytes;
        ulong bad = 0;
        try
        {
            await read(offset, scratch[..length]);
        }
        catch (BlockDeviceException e) when (e.Error == BlockError.Io)
        {
            for (int i = 0; i * Block < length; i++)
            {
                try
                {
                    await read(offset + (long)i * Block, scratch.Slice(i * Block, Math.Min(Block, length - i * Block)));
                }
                catch (BlockDeviceException b) when (b.Error == BlockError.Io)
                {
                    bad |= 1UL << i;
                }
                catch (ArgumentOutOfRangeException)
                {
                    break;
                }
            }
        }
        BinaryPrimitives.WriteUInt64LittleEndian(scratch.Span, bad);
    }

    /// <summary>
    /// One block of a named snapshot, for the owner repairing its own copy of it. The name is decoded before anything is
    /// read: the connection hands in one buffer as both payload and read buffer. The node's store checks the block's
    /// checksum, so a bad copy answers <see cref="ReplicaStatus.Io"/> and the owner tries another replica.
    /// </summary>
    private async ValueTask<ReplicaStatus> ReadSnapshotBlockAsync(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> block,
        CancellationToken cancellationToken)
    {
        if (Control is null)
        {
            return ReplicaStatus.NotSupported;
        }
        try
        {
            string name = StrictUtf8.GetString(payload.Span[..(int)request.Length]);
            await Control.ReadSnapshotBlockAsync(name, request.Offset, block[..ReplicaProtocol.SnapshotBlockBytes], cancellationToken);
            return ReplicaStatus.Ok;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException) // unknown snapshot, past its end, not UTF-8
        {
            return ReplicaStatus.InvalidArgument;
        }
        catch (NotSupportedException)
        {
            return ReplicaStatus.NotSupported;
        }
    }

    /// <summary>
    /// A snapshot's blocks in the verify window from the request's offset, checked against their checksums like
    /// <see cref="VerifyAsync"/> does the volume's (the name is decoded first: payload and scratch are one buffer).
    /// Blocks past the snapshot's end are not read and count as good.
    /// </summary>
    private async ValueTask<ReplicaStatus> VerifySnapshotAsync(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> scratch,
        CancellationToken cancellationToken)
    {
        if (Control is null)
        {
            return ReplicaStatus.NotSupported;
        }
        try
        {
            string name = StrictUtf8.GetString(payload.Span[..(int)request.Length]);
            await VerifyWindowAsync((at, into) => Control.ReadSnapshotBlockAsync(name, at, into, cancellationToken), request.Offset,
                ReplicaProtocol.MaxVerifyBytes, scratch);
            return ReplicaStatus.Ok;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException) // unknown snapshot, past its end, not UTF-8
        {
            return ReplicaStatus.InvalidArgument;
        }
        catch (NotSupportedException)
        {
            return ReplicaStatus.NotSupported;
        }
    }

    /// <summary>Mends one block of a named snapshot with the owner's copy; the reply's byte says what became of it.</summary>
    private ReplicaStatus RewriteSnapshotBlock(ReplicaRequest request, ReadOnlySpan<byte> payload, Span<byte> reply)
    {
        if (Control is null)
        {
            return ReplicaStatus.NotSupported;
        }
        int nameBytes = ReplicaProtocol.NameBytes(request);
        try
        {
            string name = StrictUtf8.GetString(payload[..nameBytes]);
            var rewrite = Control.RewriteSnapshotBlock(name, request.Offset, payload.Slice(nameBytes, ReplicaProtocol.SnapshotBlockBytes));
            reply[0] = (byte)rewrite.Outcome; // over the payload, which is read by now
            return ReplicaStatus.Ok;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException)
        {
            return ReplicaStatus.InvalidArgument;
        }
        catch (NotSupportedException)
        {
            return ReplicaStatus.NotSupported;
        }
    }

    private ReplicaStatus ExecuteControl(ReplicaRequest request, ReadOnlySpan<byte> name)
    {
        if (Control is null)
        {
            return ReplicaStatus.NotSupported;
        }
        try
        {
            switch (request.Op)
            {
                case ReplicaOp.Grow:
                    Control.Grow(request.Offset);
                    break;
                case ReplicaOp.CreateSnapshot:
                    Control.CreateSnapshot(StrictUtf8.GetString(name));
                    break;
                case ReplicaOp.DeleteSnapshot:
                    Control.DeleteSnapshot(StrictUtf8.GetString(name));
                    break;
                case ReplicaOp.DeleteAllSnapshots:
                    Control.DeleteAllSnapshots();
                    break;
                default:
                    Control.RevertToSnapshot(StrictUtf8.GetString(name));
                    break;
            }
            if (request.Op != ReplicaOp.Grow)
            {
                History?.MarkUnrecordable();
            }
            return ReplicaStatus.Ok;
        }
        catch (BlockDeviceException e)
        {
            return StatusOf(e.Error);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException) // includes names that are not UTF-8
        {
            return ReplicaStatus.InvalidArgument;
        }
        catch (NotSupportedException)
        {
            return ReplicaStatus.NotSupported;
        }
    }

    public static ReplicaStatus StatusOf(BlockError error) => error switch
    {
        BlockError.Io => ReplicaStatus.Io,
        BlockError.NoSpace => ReplicaStatus.NoSpace,
        BlockError.ReadOnly => ReplicaStatus.ReadOnly,
        BlockError.InvalidArgument => ReplicaStatus.InvalidArgument,
        BlockError.NotSupported => ReplicaStatus.NotSupported,
        _ => ReplicaStatus.Shutdown,
    };
}

/// <summary>The replicas a node serves, by name.</summary>
public sealed class ReplicaCatalog
{
    private readonly Dictionary<string, ReplicaTarget> _targets = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public void Add(ReplicaTarget target)
    {
        lock (_lock)
        {
            _targets.Add(target.Name, target);
        }
    }

    public bool Remove(string name)
    {
        lock (_lock)
        {
            return _targets.Remove(name);
        }
    }

    public ReplicaTarget? Find(string name)
    {
        lock (_lock)
        {
            return _targets.GetValueOrDefault(name);
        }
    }
}

using System.Diagnostics.CodeAnalysis;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// A volume as its owner serves it: every write, trim, zeroing and flush goes to the local replica and to every remote
/// in-sync replica at once, and is acknowledged only when all of them have it (invariant 1). A remote replica that
/// fails or cannot be reached is dropped from the in-sync set through <see cref="IInSyncSet"/> — a compare-and-swap
/// that bumps the epoch — before the write is acknowledged without it (invariant 2). A replica answering
/// <see cref="ReplicaStatus.StaleEpoch"/>, or a failed drop, means another owner has taken over: this one then fails
/// the write and every later one, so it never acknowledges behind the new owner's back. Reads are served locally.
/// With an <see cref="IOwnerLease"/>, an owner whose lease lapsed serves and acknowledges nothing until it holds the
/// lease again: the controller may fail the volume over once the lease expired, so past that moment this owner can
/// no longer prove that its epoch is current.
/// </summary>
public sealed class ReplicatedVolume : IBlockDevice, IDisposable
{
    private readonly IBlockDevice _local;
    private readonly IInSyncSet _inSyncSet;
    private readonly IOwnerLease? _lease;
    private readonly SemaphoreSlim _changing = new(1, 1);
    private volatile IReplicaChannel[] _inSync;
    private long _epoch;
    private volatile string? _fenced;

    /// <param name="lease">The owner node's lease; null when nothing else can take the volume over (a single node).</param>
    public ReplicatedVolume(IBlockDevice local, IEnumerable<IReplicaChannel> remotes, ulong epoch, IInSyncSet inSyncSet, IOwnerLease? lease = null)
    {
        _lease = lease;
        _local = local;
        _inSync = [.. remotes];
        _epoch = (long)epoch;
        _inSyncSet = inSyncSet;
    }

    public long SizeBytes => _local.SizeBytes;

    public int PreferredBlockSizeBytes => _local.PreferredBlockSizeBytes;

    public bool IsReadOnly => _local.IsReadOnly;

    /// <summary>The epoch this owner last established.</summary>
    public ulong Epoch => (ulong)Interlocked.Read(ref _epoch);

    /// <summary>The remote replicas still in sync.</summary>
    public IReadOnlyList<string> InSyncReplicas => [.. _inSync.Select(r => r.Replica)];

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        ThrowIfUnavailable();
        var read = _local.ReadAsync(offset, destination, cancellationToken);
        if (_lease is null)
        {
            return read;
        }
        // The data must not reach the client if the lease lapsed while the read ran: a new owner may have changed it.
        return read.IsCompletedSuccessfully ? CheckLeaseAfterRead() : ReadHoldingLeaseAsync(read);
    }

    private ValueTask CheckLeaseAfterRead()
    {
        ThrowIfLeaseLapsed();
        return ValueTask.CompletedTask;
    }

    private async ValueTask ReadHoldingLeaseAsync(ValueTask read)
    {
        await read;
        ThrowIfLeaseLapsed();
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        !IsAvailable(out var refused) ? ValueTask.FromException(refused) : ReplicateAsync(_local.WriteAsync(offset, source, flags, cancellationToken), ReplicaOp.Write, Flags(flags), offset, (uint)source.Length, source, cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) =>
        !IsAvailable(out var refused) ? ValueTask.FromException(refused) : ReplicateAsync(_local.FlushAsync(cancellationToken), ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        !IsAvailable(out var refused) ? ValueTask.FromException(refused) : RangeAsync(_local.TrimAsync(offset, length, flags, cancellationToken), ReplicaOp.Trim, Flags(flags), offset, length, cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if (!IsAvailable(out var refused))
        {
            return ValueTask.FromException(refused);
        }
        var replicaFlags = Flags(flags) | ((zeroFlags & ZeroFlags.NoHole) != 0 ? ReplicaFlags.NoHole : ReplicaFlags.None);
        return RangeAsync(_local.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken), ReplicaOp.WriteZeroes, replicaFlags, offset, length, cancellationToken);
    }

    public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) =>
        _local.GetAllocationAsync(offset, length, extents, cancellationToken);

    private static ReplicaFlags Flags(WriteFlags flags) => (flags & WriteFlags.ForceUnitAccess) != 0 ? ReplicaFlags.ForceUnitAccess : ReplicaFlags.None;

    private ValueTask RangeAsync(ValueTask local, ReplicaOp op, ReplicaFlags flags, long offset, long length, CancellationToken cancellationToken)
    {
        if (length > uint.MaxValue)
        {
            // The replica protocol carries 32-bit ranges; the local device rejects nothing here, so split rather than fail.
            return SplitRangeAsync(local, op, flags, offset, length, cancellationToken);
        }
        return ReplicateAsync(local, op, flags, offset, (uint)length, default, cancellationToken);
    }

    private async ValueTask SplitRangeAsync(ValueTask local, ReplicaOp op, ReplicaFlags flags, long offset, long length, CancellationToken cancellationToken)
    {
        const uint Chunk = 1u << 31;
        await local;
        for (long done = 0; done < length; done += Chunk)
        {
            await ReplicateAsync(ValueTask.CompletedTask, op, flags, offset + done, (uint)Math.Min(Chunk, length - done), default, cancellationToken);
        }
    }

    /// <summary>Runs the local operation and the same request on every in-sync replica; acknowledges once all have it or the failed ones are dropped.</summary>
    private async ValueTask ReplicateAsync(ValueTask local, ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        CancellationToken cancellationToken)
    {
        ThrowIfUnavailable();
        var replicas = _inSync;
        var sends = new ValueTask<ReplicaStatus>[replicas.Length];
        for (int i = 0; i < replicas.Length; i++)
        {
#pragma warning disable CA2012 // each send is awaited exactly once, below, after the local operation: they run in parallel
            sends[i] = Send(replicas[i], op, flags, offset, length, payload, cancellationToken);
#pragma warning restore CA2012
        }
        Exception? localFailure = null;
        try
        {
            await local;
        }
        catch (Exception e)
        {
            localFailure = e; // still collect the replicas' answers, so no send is left unobserved
        }
        List<IReplicaChannel>? failed = null;
        for (int i = 0; i < sends.Length; i++)
        {
            var status = await sends[i];
            if (status == ReplicaStatus.StaleEpoch)
            {
                Fence($"replica {replicas[i].Replica} has seen a newer epoch than {Epoch}: another owner took over");
            }
            else if (status != ReplicaStatus.Ok && status != ReplicaStatus.InvalidArgument)
            {
                (failed ??= []).Add(replicas[i]);
            }
        }
        if (localFailure is not null)
        {
            throw localFailure.GetType() == typeof(BlockDeviceException) ? localFailure : new BlockDeviceException(BlockError.Io, localFailure.Message, localFailure);
        }
        ThrowIfFenced();
        if (failed is not null)
        {
            await DropAsync(failed, cancellationToken);
        }
        ThrowIfLeaseLapsed(); // the replicas answered, but the lease may have lapsed meanwhile: acknowledge nothing then
    }

    private static async ValueTask<ReplicaStatus> Send(IReplicaChannel replica, ReplicaOp op, ReplicaFlags flags, long offset, uint length,
        ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        try
        {
            return await replica.SendAsync(op, flags, offset, length, payload, default, cancellationToken);
        }
        catch (ReplicaLinkException)
        {
            return ReplicaStatus.Shutdown; // unreachable: dropped like a failed one
        }
    }

    /// <summary>Takes failed replicas out of the in-sync set, bumping the epoch in the cluster store first (invariant 2).</summary>
    private async ValueTask DropAsync(List<IReplicaChannel> failed, CancellationToken cancellationToken)
    {
        await _changing.WaitAsync(cancellationToken);
        try
        {
            var current = _inSync;
            var stillThere = failed.Where(f => current.Contains(f)).ToList();
            if (stillThere.Count == 0)
            {
                return; // a concurrent write already dropped them
            }
            ulong next;
            try
            {
                next = await _inSyncSet.DropAsync([.. stillThere.Select(f => f.Replica)], Epoch, cancellationToken);
            }
            catch (ReplicaFencedException e)
            {
                Fence(e.Message);
                throw new BlockDeviceException(BlockError.Shutdown, $"volume fenced: {e.Message}");
            }
            Interlocked.Exchange(ref _epoch, (long)next);
            _inSync = [.. current.Except(stillThere)];
        }
        finally
        {
            _changing.Release();
        }
    }

    private void Fence(string reason) => _fenced ??= reason;

    public void Dispose() => _changing.Dispose();

    private void ThrowIfFenced()
    {
        if (_fenced is { } reason)
        {
            throw new BlockDeviceException(BlockError.Shutdown, $"volume fenced: {reason}");
        }
    }

    /// <summary>Checked before the local device is touched, so a fenced or lease-less owner changes nothing at all.</summary>
    private bool IsAvailable([NotNullWhen(false)] out Exception? refused)
    {
        try
        {
            ThrowIfUnavailable();
            refused = null;
            return true;
        }
        catch (BlockDeviceException e)
        {
            refused = e;
            return false;
        }
    }

    private void ThrowIfUnavailable()
    {
        ThrowIfFenced();
        ThrowIfLeaseLapsed();
    }

    private void ThrowIfLeaseLapsed()
    {
        if (_lease is { IsHeld: false })
        {
            ThrowLeaseLapsed();
        }
    }

    [DoesNotReturn]
    private void ThrowLeaseLapsed() => throw new BlockDeviceException(BlockError.Io,
        $"the owner can no longer prove its epoch {Epoch}: its lease in the cluster store lapsed; nothing is served or acknowledged until it holds the lease again");
}

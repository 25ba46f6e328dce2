using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// A volume as its owner serves it: every write, trim, zeroing and flush goes to the local replica and to every remote
/// in-sync replica at once, and is acknowledged only when all of them have it (invariant 1). A remote replica that
/// fails or cannot be reached is dropped from the in-sync set through <see cref="IInSyncSet"/> — a compare-and-swap
/// that bumps the epoch — before the write is acknowledged without it (invariant 2). A replica answering
/// <see cref="ReplicaStatus.StaleEpoch"/>, or a failed drop, means another owner has taken over: this one then fails
/// the write and every later one, so it never acknowledges behind the new owner's back. Reads are served locally.
/// </summary>
public sealed class ReplicatedVolume : IBlockDevice, IDisposable
{
    private readonly IBlockDevice _local;
    private readonly IInSyncSet _inSyncSet;
    private readonly SemaphoreSlim _changing = new(1, 1);
    private volatile IReplicaChannel[] _inSync;
    private long _epoch;
    private volatile string? _fenced;

    public ReplicatedVolume(IBlockDevice local, IEnumerable<IReplicaChannel> remotes, ulong epoch, IInSyncSet inSyncSet)
    {
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
        ThrowIfFenced();
        return _local.ReadAsync(offset, destination, cancellationToken);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        ReplicateAsync(_local.WriteAsync(offset, source, flags, cancellationToken), ReplicaOp.Write, Flags(flags), offset, (uint)source.Length, source, cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) =>
        ReplicateAsync(_local.FlushAsync(cancellationToken), ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        RangeAsync(_local.TrimAsync(offset, length, flags, cancellationToken), ReplicaOp.Trim, Flags(flags), offset, length, cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
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
        ThrowIfFenced();
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
}

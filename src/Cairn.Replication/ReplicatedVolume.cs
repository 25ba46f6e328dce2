using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// A volume as its owner serves it: every write, trim, zeroing and flush goes to the local replica and to every remote
/// in-sync replica at once, and is acknowledged only when all of them have it (invariant 1). A remote replica that
/// fails or cannot be reached is dropped from the in-sync set through <see cref="IInSyncSet"/> — a compare-and-swap
/// that bumps the epoch — before the write is acknowledged without it (invariant 2); from then on the regions it
/// misses are tracked (<see cref="DirtySince"/>) so that it can be resynced from those alone. A replica answering
/// <see cref="ReplicaStatus.StaleEpoch"/>, or a failed drop, means another owner has taken over: this one then fails
/// the write and every later one, so it never acknowledges behind the new owner's back. Reads are served locally; a
/// local block that fails its checksum is repaired from an in-sync replica first (see the Repair partial).
/// With an <see cref="IOwnerLease"/>, an owner whose lease lapsed serves and acknowledges nothing until it holds the
/// lease again: the controller may fail the volume over once the lease expired, so past that moment this owner can
/// no longer prove that its epoch is current. Client requests wait for the lease for a while first (see the Lease partial).
/// </summary>
public sealed partial class ReplicatedVolume : IBlockDevice, IDisposable
{
    private readonly IBlockDevice _local;
    private readonly IInSyncSet _inSyncSet;
    private readonly IOwnerLease? _lease;
    private readonly SemaphoreSlim _changing = new(1, 1);
    private long _epoch;
    private volatile string? _fenced;
    private readonly ActivityLog _activity;

    /// <param name="lease">The owner node's lease; null when nothing else can take the volume over (a single node).</param>
    /// <param name="remotesMayHoldUnflushedChanges">The remotes (or the local copy) may hold changes another owner, or an
    /// earlier run of this one, sent them and no flush covered: until this owner's first flush completes, a dropped
    /// replica cannot be resynced from a record (see <see cref="ActivityLog"/>). False only for copies that started empty with this owner.</param>
    public ReplicatedVolume(IBlockDevice local, IEnumerable<IReplicaChannel> remotes, ulong epoch, IInSyncSet inSyncSet, IOwnerLease? lease = null,
        bool remotesMayHoldUnflushedChanges = false)
    {
        _activity = new ActivityLog(remotesMayHoldUnflushedChanges);
        _local = local;
        _membership = new Membership([.. remotes], [], []);
        _epoch = (long)epoch;
        _inSyncSet = inSyncSet;
        _lease = lease;
    }

    public long SizeBytes => _local.SizeBytes;

    public int PreferredBlockSizeBytes => _local.PreferredBlockSizeBytes;

    public bool IsReadOnly => _local.IsReadOnly;

    /// <summary>The epoch this owner last established.</summary>
    public ulong Epoch => (ulong)Interlocked.Read(ref _epoch);

    /// <summary>Whether changes were acknowledged since the last flush every in-sync replica completed: a periodic flush
    /// then bounds what a replica that crashes can lose, and so what its resync must cover besides what it missed.</summary>
    public bool HasUnflushedChanges => !_activity.IsEmpty;

    /// <summary>The remote replicas still in sync.</summary>
    public IReadOnlyList<string> InSyncReplicas => [.. _membership.InSync.Select(r => r.Replica)];

    /// <summary>How many remote replicas are in sync: what <see cref="InSyncReplicas"/> counts, without building the list
    /// (a lease condition asks this twice per change).</summary>
    public int InSyncReplicaCount => _membership.InSync.Length;

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        if (_fenced is { } reason)
        {
            return ValueTask.FromException(FencedException(reason));
        }
        if (_lease is { IsHeld: false })
        {
            return ReadOnceLeaseHeldAsync(offset, destination, cancellationToken);
        }
        var read = _local.ReadAsync(offset, destination, cancellationToken);
        if (read.IsCompletedSuccessfully)
        {
            // The data must not reach the client while the lease is lapsed: a new owner may have changed it meanwhile.
            return _lease is null || _lease.IsHeld ? read : AwaitLeaseAsync(cancellationToken);
        }
        return ReadRepairingAsync(read, offset, destination, cancellationToken);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        var replicaFlags = Flags(flags) | ((flags & WriteFlags.Uncached) != 0 ? ReplicaFlags.Uncached : ReplicaFlags.None); // writes only carry it
        return ReplicateAsync(new Change(ReplicaOp.Write, replicaFlags, offset, source.Length, source, flags, ZeroFlags.None), cancellationToken);
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) =>
        ReplicateAsync(new Change(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, WriteFlags.None, ZeroFlags.None), cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        ReplicateAsync(new Change(ReplicaOp.Trim, Flags(flags), offset, length, default, flags, ZeroFlags.None), cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        var replicaFlags = Flags(flags) | ((zeroFlags & ZeroFlags.NoHole) != 0 ? ReplicaFlags.NoHole : ReplicaFlags.None);
        return ReplicateAsync(new Change(ReplicaOp.WriteZeroes, replicaFlags, offset, length, default, flags, zeroFlags), cancellationToken);
    }

    public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) =>
        _local.GetAllocationAsync(offset, length, extents, cancellationToken);

    private static ReplicaFlags Flags(WriteFlags flags) => (flags & WriteFlags.ForceUnitAccess) != 0 ? ReplicaFlags.ForceUnitAccess : ReplicaFlags.None;

    /// <summary>One change to the volume, as both the local device and the replica protocol need it.</summary>
    private readonly record struct Change(ReplicaOp Op, ReplicaFlags ReplicaFlags, long Offset, long Length, ReadOnlyMemory<byte> Payload,
        WriteFlags WriteFlags, ZeroFlags ZeroFlags)
    {
        public bool HasRange => Op is ReplicaOp.Write or ReplicaOp.Trim or ReplicaOp.WriteZeroes;
    }

    /// <summary>
    /// Applies a change locally, on every in-sync replica and on every replica being rebuilt; acknowledges once the
    /// in-sync ones have it or the failed ones are dropped. Pooled builders and a pooled array of sends, no lock while
    /// no rebuild runs: nothing is allocated per change while all goes well.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReplicateAsync(Change change, CancellationToken cancellationToken)
    {
        // Before the local device is touched: a fenced owner changes nothing at all, a lease-less one nothing until it holds the lease again.
        ThrowIfFenced();
        if (_lease is { IsHeld: false })
        {
            await AwaitLeaseAsync(cancellationToken);
        }
        var membership = Enter();
        bool waited = membership.Paused is not null;
        if (waited)
        {
            membership = await EnterAfterPauseAsync(membership, cancellationToken); // a snapshot is being taken
        }
        try
        {
            if (waited)
            {
                ThrowIfFenced(); // the snapshot may have found another owner
                if (_lease is { IsHeld: false })
                {
                    await AwaitLeaseAsync(cancellationToken);
                }
            }
            long seal = change.Op == ReplicaOp.Flush ? _activity.Seal() : 0; // before it is sent: it covers what completed so far
            ulong sentAt = Epoch; // at or before the epoch the replicas receive it at
            Track(membership, change);
            var failed = await ApplyAsync(change, membership, cancellationToken);
            if (failed is not null)
            {
                await DropAsync(failed, change, cancellationToken); // a dropped replica's record starts with what it may not have made durable
            }
            if (change.HasRange)
            {
                _activity.Mark(change.Offset, change.Length, sentAt);
            }
            else if (change.Op == ReplicaOp.Flush)
            {
                _activity.Retire(seal); // durable on every replica still in sync
            }
        }
        finally
        {
            membership.Exit(); // only now: a rebuild that waits for this change to leave then finds it tracked or sent
        }
        if (_lease is { IsHeld: false })
        {
            await AwaitLeaseAsync(cancellationToken); // the replicas answered, but the lease lapsed meanwhile: acknowledge only once it is held again
        }
    }

    /// <summary>Runs the change locally and on every replica of <paramref name="membership"/> at once; returns the in-sync replicas that failed it.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<List<IReplicaChannel>?> ApplyAsync(Change change, Membership membership, CancellationToken cancellationToken)
    {
        var rebuilding = membership.Rebuilding;
        int count = membership.InSync.Length + rebuilding.Length;
        var sends = ArrayPool<ValueTask<ReplicaStatus>>.Shared.Rent(count);
        int entered = 0;
        Exception? localFailure = null;
        (List<IReplicaChannel>? Failed, List<RebuildSession>? Lost) outcome;
        var repairGate = change.HasRange ? membership.RepairGate : null;
        bool repairEntered = false;
        try
        {
            // A rebuild's copier must not copy this range between our local write and the replica's: hold it shared throughout.
            for (; change.HasRange && entered < rebuilding.Length; entered++)
            {
                await rebuilding[entered].Gate.EnterLiveAsync(change.Offset, change.Offset + change.Length);
            }
            // Nor may a repair rewrite a block from a copy this change has not reached yet (after the rebuild gates: one order for all).
            if (repairGate is not null)
            {
                await repairGate.EnterLiveAsync(change.Offset, change.Offset + change.Length);
                repairEntered = true;
            }
            StartSends(change, membership, sends, cancellationToken);
            try
            {
                await ApplyLocallyAsync(change, cancellationToken);
            }
            catch (Exception e)
            {
                localFailure = e; // still collect the replicas' answers, so no send is left unobserved
            }
            outcome = await CollectAsync(membership, sends, localFailure is not null);
        }
        finally
        {
            if (repairEntered)
            {
                repairGate!.ExitLive(change.Offset, change.Offset + change.Length);
            }
            for (int i = 0; i < entered; i++)
            {
                rebuilding[i].Gate.ExitLive(change.Offset, change.Offset + change.Length);
            }
            Array.Clear(sends, 0, count);
            ArrayPool<ValueTask<ReplicaStatus>>.Shared.Return(sends);
        }
        var failed = outcome.Failed;
        if (outcome.Lost is not null)
        {
            await RebuildTargetsFailedAsync(outcome.Lost, change, failed ??= []);
        }
        if (localFailure is not null)
        {
            throw localFailure.GetType() == typeof(BlockDeviceException) ? localFailure : new BlockDeviceException(BlockError.Io, localFailure.Message, localFailure);
        }
        ThrowIfFenced();
        return failed is { Count: > 0 } ? failed : null;
    }

    /// <summary>Sends the change to every in-sync replica, then to every replica being rebuilt, into <paramref name="sends"/> in that order.</summary>
    private static void StartSends(Change change, Membership membership, ValueTask<ReplicaStatus>[] sends, CancellationToken cancellationToken)
    {
        var replicas = membership.InSync;
        var rebuilding = membership.Rebuilding;
#pragma warning disable CA2012 // each send is awaited exactly once, in CollectAsync, after the local operation: they run in parallel
        for (int i = 0; i < replicas.Length; i++)
        {
            sends[i] = change.Length <= uint.MaxValue ? SendDirect(replicas[i], change, cancellationToken) : SendAsync(replicas[i], change, cancellationToken);
        }
        for (int i = 0; i < rebuilding.Length; i++)
        {
            sends[replicas.Length + i] = rebuilding[i].Failure is null ? SendToRebuildAsync(rebuilding[i].Channel, change, cancellationToken) : new(ReplicaStatus.Ok);
        }
#pragma warning restore CA2012
    }

    /// <summary>
    /// The channel's own ValueTask (a link's is its reusable slot), without a wrapping state machine per replica and
    /// change: <see cref="CollectAsync"/> turns an unreachable replica into <see cref="ReplicaStatus.Shutdown"/> instead.
    /// </summary>
    private static ValueTask<ReplicaStatus> SendDirect(IReplicaChannel replica, Change change, CancellationToken cancellationToken)
    {
        try
        {
            return replica.SendAsync(change.Op, change.ReplicaFlags, change.Offset, (uint)change.Length, change.Payload, default, cancellationToken);
        }
        catch (ReplicaLinkException e)
        {
            return ValueTask.FromException<ReplicaStatus>(e);
        }
    }

    /// <summary>
    /// Awaits every send: in-sync replicas that failed, rebuild targets that failed, and a fence on a newer epoch.
    /// <see cref="ReplicaStatus.InvalidArgument"/> is the caller's mistake only when the local replica refused the
    /// change too; a replica refusing what the local one took has diverged, and is dropped.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<(List<IReplicaChannel>? Failed, List<RebuildSession>? Lost)> CollectAsync(Membership membership, ValueTask<ReplicaStatus>[] sends,
        bool localFailed)
    {
        var replicas = membership.InSync;
        var rebuilding = membership.Rebuilding;
        List<IReplicaChannel>? failed = null;
        List<RebuildSession>? lost = null;
        for (int i = 0; i < replicas.Length + rebuilding.Length; i++)
        {
            ReplicaStatus status;
            try
            {
                status = await sends[i];
            }
            catch (ReplicaLinkException)
            {
                status = ReplicaStatus.Shutdown; // unreachable: dropped like a failed replica (see SendAsync)
            }
            var replica = i < replicas.Length ? replicas[i] : rebuilding[i - replicas.Length].Channel;
            if (status == ReplicaStatus.StaleEpoch)
            {
                Fence($"replica {replica.Replica} has seen a newer epoch than {Epoch}: another owner took over");
            }
            else if (status == ReplicaStatus.Ok || (status == ReplicaStatus.InvalidArgument && localFailed))
            {
                continue;
            }
            else if (i < replicas.Length)
            {
                (failed ??= []).Add(replica);
            }
            else
            {
                (lost ??= []).Add(rebuilding[i - replicas.Length]);
            }
        }
        return (failed, lost);
    }

    private ValueTask ApplyLocallyAsync(Change change, CancellationToken cancellationToken) => change.Op switch
    {
        ReplicaOp.Write => _local.WriteAsync(change.Offset, change.Payload, change.WriteFlags, cancellationToken),
        ReplicaOp.Flush => _local.FlushAsync(cancellationToken),
        ReplicaOp.Trim => _local.TrimAsync(change.Offset, change.Length, change.WriteFlags, cancellationToken),
        _ => _local.WriteZeroesAsync(change.Offset, change.Length, change.ZeroFlags, change.WriteFlags, cancellationToken),
    };

    /// <summary>Sends a change to one replica; an unreachable one answers <see cref="ReplicaStatus.Shutdown"/>, so it is dropped like a failed one.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<ReplicaStatus> SendAsync(IReplicaChannel replica, Change change, CancellationToken cancellationToken)
    {
        try
        {
            if (change.Length <= uint.MaxValue)
            {
                return await replica.SendAsync(change.Op, change.ReplicaFlags, change.Offset, (uint)change.Length, change.Payload, default, cancellationToken);
            }
            // The replica protocol carries 32-bit ranges; trims and zeroings beyond that go in pieces rather than fail.
            const long Piece = 1L << 31;
            for (long done = 0; done < change.Length; done += Piece)
            {
                var status = await replica.SendAsync(change.Op, change.ReplicaFlags, change.Offset + done, (uint)Math.Min(Piece, change.Length - done),
                    default, default, cancellationToken);
                if (status != ReplicaStatus.Ok)
                {
                    return status;
                }
            }
            return ReplicaStatus.Ok;
        }
        catch (ReplicaLinkException)
        {
            return ReplicaStatus.Shutdown;
        }
    }

    /// <summary>A replica being rebuilt that fails a change costs the rebuild, never the change: every failure answers a status.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<ReplicaStatus> SendToRebuildAsync(IReplicaChannel replica, Change change, CancellationToken cancellationToken)
    {
        try
        {
            return await SendAsync(replica, change, cancellationToken);
        }
        catch (Exception)
        {
            return ReplicaStatus.Shutdown;
        }
    }

    /// <summary>
    /// Waits for a local read that did not complete at once. One that fails with an IO error (a block failing its
    /// checksum, a media error) is repaired from an in-sync replica block by block and read again (invariant 4: a bad
    /// block is never returned to a client, and the owner's copy is healed); the original error stands only when some
    /// block has no good copy anywhere.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadRepairingAsync(ValueTask read, long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        try
        {
            await read;
        }
        catch (BlockDeviceException e) when (e.Error == BlockError.Io && _membership.InSync.Length > 0)
        {
            if (!await RepairReadRangeAsync(offset, destination.Length, cancellationToken))
            {
                throw;
            }
            await _local.ReadAsync(offset, destination, cancellationToken);
        }
        if (_lease is { IsHeld: false })
        {
            await AwaitLeaseAsync(cancellationToken);
        }
    }

    private void Fence(string reason) => _fenced ??= reason;

    public void Dispose()
    {
        _changing.Dispose();
        _controlling.Dispose();
        _repairWindow.Dispose();
    }

    private bool IsAvailable([NotNullWhen(false)] out Exception? refused)
    {
        refused = _fenced is { } reason ? FencedException(reason)
            : _lease is { IsHeld: false } ? LeaseLapsedException()
            : null;
        return refused is null;
    }

    private void ThrowIfUnavailable()
    {
        if (!IsAvailable(out var refused))
        {
            throw refused;
        }
    }

    private void ThrowIfFenced()
    {
        if (_fenced is { } reason)
        {
            throw FencedException(reason);
        }
    }

    private static BlockDeviceException FencedException(string reason) => new(BlockError.Shutdown, $"volume fenced: {reason}");
}

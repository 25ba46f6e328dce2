using System.Runtime.CompilerServices;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>How far a rebuild has come: bytes of the volume copied (or erased) out of those it has to.</summary>
public readonly record struct RebuildProgress(long BytesDone, long BytesTotal);

/// <summary>
/// What a finished rebuild sent to the replica: <see cref="DataBytes"/> read locally and written to it, and
/// <see cref="ErasedBytes"/> of holes and zeros erased by trims and zeroings (requests without payload). Live changes
/// that reached the replica meanwhile are not counted: they are the clients' writes, not the rebuild's.
/// </summary>
public readonly record struct RebuildSummary(bool Delta, long DataBytes, long ErasedBytes);

/// <summary>A rebuild stopped before the replica caught up: it stays out of the in-sync set, and the volume carries on.</summary>
public sealed class ReplicaRebuildException(string message, Exception? inner = null) : Exception(message, inner);

public sealed partial class ReplicatedVolume
{
    /// <summary>
    /// Brings <paramref name="replica"/> up to date while live changes go on, then admits it to the in-sync set
    /// (invariant 3). A full rebuild first recreates the owner's snapshots there (<see cref="CopySnapshotsAsync"/>).
    /// From the start, every live change also goes to it; its failure there aborts the rebuild, never the change. Meanwhile the owner copies: with <paramref name="delta"/>, only the regions recorded since it dropped
    /// that replica (<see cref="DirtySince"/>); otherwise the whole volume, data as data and holes and zeros as trims
    /// and zeroings, so stale data on a returning replica is erased. Then the replica is flushed and admitted through
    /// <see cref="IInSyncSet.AdmitAsync"/>, which bumps the epoch, in one step with respect to live changes.
    /// </summary>
    /// <returns>What the copier sent: data bytes and erased bytes, live changes not included.</returns>
    /// <exception cref="InvalidOperationException">The replica is in sync or already being rebuilt, or a delta was asked for without a record.</exception>
    /// <exception cref="ReplicaRebuildException">The replica failed, or the local device could not be read: the rebuild is abandoned.</exception>
    /// <exception cref="BlockDeviceException">The volume is fenced: another owner took over (also when admitting the replica).</exception>
    public async Task<RebuildSummary> RebuildAsync(IReplicaChannel replica, bool delta, IProgress<RebuildProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(replica);
        ThrowIfUnavailable();
        long? snapshots = delta ? null : await CopySnapshotsAsync(replica, cancellationToken);
        await _controlling.WaitAsync(cancellationToken);
        bool controlling = true;
        RebuildSession? session = null;
        try
        {
            if (snapshots is { } copied && copied != Interlocked.Read(ref _snapshotGeneration))
            {
                throw new ReplicaRebuildException($"the snapshots of the volume changed while they were copied to replica {replica.Replica}; its rebuild starts over");
            }
            (session, var map, var earlierDrained) = await StartRebuildAsync(replica, delta, cancellationToken);
            await GrowTargetAsync(session, cancellationToken); // no grow can slip between this and the replica receiving live requests
            _controlling.Release();
            controlling = false;
            await earlierDrained.WaitAsync(cancellationToken);
            List<DirtyRange> ranges = map is null ? [new DirtyRange(0, SizeBytes)] : Clip(map.Ranges(), SizeBytes);
            long total = ranges.Sum(r => r.Length);
            progress?.Report(new RebuildProgress(0, total));
            await CopyAsync(session, ranges, total, progress, cancellationToken);
            await SendToTargetAsync(session, ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, cancellationToken);
            await AdmitAsync(session);
            return new RebuildSummary(delta, session.DataBytes, session.ErasedBytes);
        }
        catch (Exception e) when (session is { Admitted: false })
        {
            await AbortRebuildAsync(session, e.Message);
            if (e is ReplicaRebuildException or OperationCanceledException || _fenced is not null)
            {
                throw;
            }
            throw new ReplicaRebuildException($"rebuild of replica {replica.Replica} failed: {e.Message}", e);
        }
        finally
        {
            if (controlling)
            {
                _controlling.Release();
            }
        }
    }

    /// <summary>
    /// One replica being rebuilt: its channel, the gate that keeps the copier and live changes apart, and why it
    /// failed, if it did. <see cref="Admitted"/> changes under <see cref="_changing"/> only.
    /// </summary>
    private sealed class RebuildSession(IReplicaChannel channel)
    {
        private volatile string? _failure;
        private long _dataBytes;
        private long _erasedBytes;

        public IReplicaChannel Channel { get; } = channel;

        public RegionGate Gate { get; } = new();

        public string? Failure => _failure;

        public bool Admitted { get; set; }

        public long DataBytes => Interlocked.Read(ref _dataBytes);

        public long ErasedBytes => Interlocked.Read(ref _erasedBytes);

        public void Fail(string reason) => _failure ??= reason;

        public void CountData(long bytes) => Interlocked.Add(ref _dataBytes, bytes);

        public void CountErased(long bytes) => Interlocked.Add(ref _erasedBytes, bytes);
    }

    /// <summary>
    /// Makes live changes reach the replica. The task returned completes once every change that started without
    /// knowing of it has finished: from then on each change either reached it, or was on the owner (or recorded as
    /// missed) before copying begins.
    /// </summary>
    private async Task<(RebuildSession Session, DirtyRegionMap? Map, Task EarlierDrained)> StartRebuildAsync(IReplicaChannel replica, bool delta,
        CancellationToken cancellationToken)
    {
        string name = replica.Replica;
        await _changing.WaitAsync(cancellationToken);
        try
        {
            ThrowIfFenced();
            var current = _membership;
            if (current.InSync.Any(r => string.Equals(r.Replica, name, StringComparison.Ordinal)))
            {
                throw new InvalidOperationException($"replica {name} is in sync: there is nothing to rebuild");
            }
            if (current.Rebuilding.Any(r => string.Equals(r.Channel.Replica, name, StringComparison.Ordinal)))
            {
                throw new InvalidOperationException($"replica {name} is already being rebuilt");
            }
            var map = delta ? FindTracked(current.Tracking, name)?.Map ?? throw new InvalidOperationException(
                $"this owner has no record of what replica {name} missed (it did not drop it, or took the volume over since): rebuild it in full") : null;
            var session = new RebuildSession(replica);
            return (session, map, Swap(current.With(rebuilding: [.. current.Rebuilding, session])));
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>A returning replica may have missed a grow: it grows to the volume's size first. One that cannot grow is copied as it is.</summary>
    private async Task GrowTargetAsync(RebuildSession session, CancellationToken cancellationToken)
    {
        ReplicaStatus status;
        try
        {
            status = await session.Channel.SendAsync(ReplicaOp.Grow, ReplicaFlags.None, SizeBytes, 0, default, default, cancellationToken);
        }
        catch (ReplicaLinkException e)
        {
            throw new ReplicaRebuildException($"replica {session.Channel.Replica} is unreachable: {e.Message}", e);
        }
        if (status != ReplicaStatus.NotSupported)
        {
            ThrowUnlessOk(session, status, ReplicaOp.Grow, SizeBytes, 0);
        }
    }

    private static List<DirtyRange> Clip(IReadOnlyList<DirtyRange> ranges, long sizeBytes) =>
        [.. ranges.Where(r => r.Offset < sizeBytes).Select(r => r with { Length = Math.Min(r.End, sizeBytes) - r.Offset })];

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendToTargetAsync(RebuildSession session, ReplicaOp op, ReplicaFlags flags, long offset, long length, ReadOnlyMemory<byte> payload,
        CancellationToken cancellationToken)
    {
        string name = session.Channel.Replica;
        ReplicaStatus status;
        try
        {
            status = await session.Channel.SendAsync(op, flags, offset, (uint)length, payload, default, cancellationToken);
        }
        catch (ReplicaLinkException e)
        {
            throw new ReplicaRebuildException($"replica {name} became unreachable during its rebuild: {e.Message}", e);
        }
        ThrowUnlessOk(session, status, op, offset, length);
    }

    private void ThrowUnlessOk(RebuildSession session, ReplicaStatus status, ReplicaOp op, long offset, long length)
    {
        string name = session.Channel.Replica;
        if (status == ReplicaStatus.StaleEpoch)
        {
            Fence($"replica {name} has seen a newer epoch than {Epoch}: another owner took over");
            ThrowIfFenced();
        }
        if (status != ReplicaStatus.Ok)
        {
            throw new ReplicaRebuildException($"replica {name} answered {status} to a {op} of {length} bytes at offset {offset} during its rebuild");
        }
    }

    /// <summary>
    /// Admits the caught-up replica in the cluster store, adopts the new epoch and moves it into the in-sync set in
    /// one membership swap: a change saw it either as rebuilding or as in sync, and reached it either way. A change
    /// that saw it rebuilding and fails on it after this point drops it like any in-sync replica.
    /// </summary>
    private async Task AdmitAsync(RebuildSession session)
    {
        string name = session.Channel.Replica;
        await _changing.WaitAsync(CancellationToken.None); // past this point the outcome must be known: never cancelled
        try
        {
            if (session.Failure is { } failure)
            {
                throw new ReplicaRebuildException(failure);
            }
            ThrowIfFenced();
            ulong next;
            try
            {
                next = await _inSyncSet.AdmitAsync(name, Epoch, CancellationToken.None);
            }
            catch (ReplicaFencedException e)
            {
                Fence(e.Message);
                throw FencedException(e.Message);
            }
            catch (Exception e)
            {
                // The store may have admitted it: acknowledging without it could then lose writes on a failover.
                Fence($"admitting replica {name} failed and may have happened ({e.Message}): this owner can no longer prove its epoch");
                throw FencedException(_fenced!);
            }
            Interlocked.Exchange(ref _epoch, (long)next);
            var current = _membership;
            _ = Swap(current.With(
                inSync: [.. current.InSync, session.Channel],
                rebuilding: [.. current.Rebuilding.Where(r => r != session)],
                tracking: [.. current.Tracking.Where(t => !string.Equals(t.Replica, name, StringComparison.Ordinal))]));
            session.Admitted = true;
        }
        finally
        {
            _changing.Release();
        }
    }

    private async Task AbortRebuildAsync(RebuildSession session, string reason)
    {
        await _changing.WaitAsync(CancellationToken.None);
        try
        {
            AbortRebuildLocked(session, reason);
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>Stops sending to a replica being rebuilt. What it missed stays recorded, if this owner had a record.</summary>
    private void AbortRebuildLocked(RebuildSession session, string reason)
    {
        session.Fail(reason);
        var current = _membership;
        if (current.Rebuilding.Contains(session))
        {
            _ = Swap(current.With(rebuilding: [.. current.Rebuilding.Where(r => r != session)]));
        }
    }

    /// <summary>
    /// Replicas being rebuilt failed a live change: each rebuild is abandoned, and the change carries on without them.
    /// One that was admitted meanwhile is in sync now: it goes to <paramref name="failed"/>, to be dropped.
    /// </summary>
    private async ValueTask RebuildTargetsFailedAsync(List<RebuildSession> lost, Change change, List<IReplicaChannel> failed)
    {
        await _changing.WaitAsync(CancellationToken.None);
        try
        {
            foreach (var session in lost)
            {
                if (session.Admitted)
                {
                    failed.Add(session.Channel);
                }
                else
                {
                    AbortRebuildLocked(session, $"replica {session.Channel.Replica} failed a live {change.Op} during its rebuild");
                }
            }
        }
        finally
        {
            _changing.Release();
        }
    }
}

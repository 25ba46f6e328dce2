namespace Cairn.Replication;

/// <summary>
/// A way to send requests to one replica. <see cref="ReplicaLink"/> is the real one (TCP); deterministic simulations
/// plug in their own simulated network here.
/// </summary>
public interface IReplicaChannel
{
    string Replica { get; }

    /// <summary>Sends one request and waits for its status; throws <see cref="ReplicaLinkException"/> when the replica cannot be reached.
    /// A successful read or verify leaves its reply's payload in <paramref name="readInto"/> (<see cref="ReplicaProtocol.ReplyPayloadBytes"/>).</summary>
    ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default);
}

/// <summary>
/// The authority over a volume's in-sync replica set and epoch: the cluster store. Dropping replicas is a
/// compare-and-swap on the epoch that bumps it, so it succeeds only for the current owner.
/// </summary>
public interface IInSyncSet
{
    /// <summary>Removes <paramref name="replicas"/> from the in-sync set at <paramref name="epoch"/> and returns the new epoch.
    /// Throws <see cref="ReplicaFencedException"/> when <paramref name="epoch"/> is no longer current: another owner took over.</summary>
    /// <param name="missingSince">The oldest epoch whose writes they may lack (writes not yet flushed when they left may be
    /// lost with their cache): recorded as their <see cref="ReplicaMember.FailedAtEpoch"/>, where it is lower than <paramref name="epoch"/>.</param>
    ValueTask<ulong> DropAsync(IReadOnlyList<string> replicas, ulong epoch, ulong missingSince, CancellationToken cancellationToken = default);

    /// <summary>Adds a rebuilt replica to the in-sync set at <paramref name="epoch"/> and returns the new epoch.
    /// Throws <see cref="ReplicaFencedException"/> when <paramref name="epoch"/> is no longer current.</summary>
    ValueTask<ulong> AdmitAsync(string replica, ulong epoch, CancellationToken cancellationToken = default);
}

/// <summary>
/// Whether the owner can still prove it owns the volume: its node's lease in the cluster store has not run out. The
/// controller fails a volume over only after the owner's lease expired, so an owner that cannot renew must stop
/// acknowledging writes before that moment, never after.
/// </summary>
public interface IOwnerLease
{
    bool IsHeld { get; }

    /// <summary>
    /// Which grant of the lease is held: it changes when the lease was lost and a new one granted. While the old one
    /// was gone the controller may have failed the volume over, so holding a new grant proves nothing about an epoch
    /// proven under the old one: the owner must read the store again before it serves (0 when the lease is never re-granted).
    /// </summary>
    long Term => 0;
}

/// <summary>This owner's epoch is no longer current: it must stop acknowledging writes.</summary>
public sealed class ReplicaFencedException(string message) : Exception(message);

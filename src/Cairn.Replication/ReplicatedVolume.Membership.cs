namespace Cairn.Replication;

public sealed partial class ReplicatedVolume
{
    private volatile Membership _membership;

    /// <summary>
    /// What this owner recorded about <paramref name="replica"/> since it dropped it: every region written since, or
    /// whose write it missed. Null when this owner has no record (it never dropped that replica, for example because
    /// it took the volume over after the drop): then only a full rebuild is safe.
    /// </summary>
    public DirtyRegionMap? DirtySince(string replica) => FindTracked(_membership.Tracking, replica)?.Map;

    /// <summary>A replica that left the in-sync set, and the regions it has missed since.</summary>
    private sealed record Tracked(string Replica, DirtyRegionMap Map);

    /// <summary>
    /// Where changes go, as one immutable snapshot swapped whole under <see cref="_changing"/>: a change reads it once,
    /// so it sees a replica either in sync or tracked, never neither.
    /// </summary>
    private sealed class Membership(IReplicaChannel[] inSync, Tracked[] tracking)
    {
        public IReplicaChannel[] InSync { get; } = inSync;

        public Tracked[] Tracking { get; } = tracking;
    }

    private static Tracked? FindTracked(Tracked[] tracking, string replica)
    {
        foreach (var tracked in tracking)
        {
            if (string.Equals(tracked.Replica, replica, StringComparison.Ordinal))
            {
                return tracked;
            }
        }
        return null;
    }

    /// <summary>Marks a change's range for every replica that is out of sync: they will need it when they return.</summary>
    private static void Track(Membership membership, in Change change)
    {
        if (!change.HasRange)
        {
            return;
        }
        foreach (var tracked in membership.Tracking)
        {
            tracked.Map.Mark(change.Offset, change.Length);
        }
    }

    /// <summary>
    /// Takes failed replicas out of the in-sync set, bumping the epoch in the cluster store first (invariant 2), and
    /// starts tracking what each misses from now on, beginning with this change. A change that was sent to a replica
    /// before a concurrent drop, and failed there, lands here too and is marked: so the map holds every change the
    /// replica may lack, whichever side of the drop it fell.
    /// </summary>
    private async ValueTask DropAsync(List<IReplicaChannel> failed, Change change, CancellationToken cancellationToken)
    {
        await _changing.WaitAsync(cancellationToken);
        try
        {
            var current = _membership;
            var stillThere = failed.Where(f => Array.IndexOf(current.InSync, f) >= 0).ToList();
            if (stillThere.Count > 0)
            {
                ulong at = Epoch;
                ulong next;
                try
                {
                    next = await _inSyncSet.DropAsync([.. stillThere.Select(f => f.Replica)], at, cancellationToken);
                }
                catch (ReplicaFencedException e)
                {
                    Fence(e.Message);
                    throw FencedException(e.Message);
                }
                Interlocked.Exchange(ref _epoch, (long)next);
                var tracking = current.Tracking.ToList();
                tracking.AddRange(stillThere.Where(f => FindTracked(current.Tracking, f.Replica) is null)
                    .Select(f => new Tracked(f.Replica, new DirtyRegionMap(at))));
                // Tracking starts in the same swap that stops sending: a change that no longer reaches the replica is marked.
                _membership = new Membership([.. current.InSync.Except(stillThere)], [.. tracking]);
            }
            if (change.HasRange)
            {
                foreach (var replica in failed)
                {
                    FindTracked(_membership.Tracking, replica.Replica)?.Map.Mark(change.Offset, change.Length);
                }
            }
        }
        finally
        {
            _changing.Release();
        }
    }
}

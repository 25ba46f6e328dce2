namespace Cairn.Replication;

public sealed partial class ReplicatedVolume
{
    private volatile Membership _membership;
    private Task _earlierDrained = Task.CompletedTask; // under _changing

    /// <summary>
    /// What this owner recorded about <paramref name="replica"/> since it dropped it: every region written since, or
    /// whose write it missed. Null when this owner has no record (it never dropped that replica, for example because
    /// it took the volume over after the drop): then only a full rebuild is safe.
    /// </summary>
    public DirtyRegionMap? DirtySince(string replica) => FindTracked(_membership.Tracking, replica)?.Map;

    /// <summary>
    /// Forgets what <paramref name="replica"/> missed, for a replica removed for good: its regions are no longer
    /// marked on every change. False when there was no record. A later rebuild of it must then be a full one.
    /// </summary>
    public async Task<bool> StopTrackingAsync(string replica, CancellationToken cancellationToken = default)
    {
        await _changing.WaitAsync(cancellationToken);
        try
        {
            var current = _membership;
            if (FindTracked(current.Tracking, replica) is not { } tracked)
            {
                return false;
            }
            _ = Swap(current.With(tracking: [.. current.Tracking.Where(t => t != tracked)]));
            return true;
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>
    /// Takes over a record of what <paramref name="replica"/> missed, kept elsewhere — the history this node kept as a
    /// replica before it was promoted — so that replica can be resynced from it; from now on every change marks it too.
    /// False when the replica is in sync or already has a record here.
    /// </summary>
    public async Task<bool> TrackAsync(string replica, DirtyRegionMap missed, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(missed);
        await _changing.WaitAsync(cancellationToken);
        try
        {
            var current = _membership;
            if (FindTracked(current.Tracking, replica) is not null || current.InSync.Any(r => string.Equals(r.Replica, replica, StringComparison.Ordinal)))
            {
                return false;
            }
            _ = Swap(current.With(tracking: [.. current.Tracking, new Tracked(replica, missed)]));
            return true;
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>A new resync record: a dropped replica may have lost what it acknowledged but had not made durable (its node
    /// may have crashed), so the record starts with those regions. Null when they are not known (a full copy is needed).</summary>
    private DirtyRegionMap? UnflushedSince(ulong epoch)
    {
        var record = new DirtyRegionMap(epoch);
        return _activity.TryCopyInto(record) ? record : null;
    }

    /// <summary>A replica that left the in-sync set, and the regions it has missed since.</summary>
    private sealed record Tracked(string Replica, DirtyRegionMap Map);

    /// <summary>
    /// Where changes go, as one immutable snapshot swapped whole under <see cref="_changing"/>: a change reads it once,
    /// so it sees a replica in sync, rebuilding or tracked, never none of them. It also counts the changes that entered
    /// through it: once swapped out, <see cref="Retire"/> tells when every change that may not know of the swap is done.
    /// </summary>
    private sealed class Membership(IReplicaChannel[] inSync, RebuildSession[] rebuilding, Tracked[] tracking, TaskCompletionSource? paused = null,
        RegionGate? repairGate = null)
    {
        private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _inFlight;
        private int _retired;

        public IReplicaChannel[] InSync { get; } = inSync;

        /// <summary>Replicas being rebuilt: live changes reach them too, but do not wait for them to be acknowledged.</summary>
        public RebuildSession[] Rebuilding { get; } = rebuilding;

        public Tracked[] Tracking { get; } = tracking;

        /// <summary>Set while a snapshot quiesces the volume: new changes wait for it instead of entering.</summary>
        public TaskCompletionSource? Paused { get; } = paused;

        /// <summary>Set while blocks are being repaired: changes hold their range in it, so a repair never rewrites a block a change is writing.</summary>
        public RegionGate? RepairGate { get; } = repairGate;

        public Membership With(IReplicaChannel[]? inSync = null, RebuildSession[]? rebuilding = null, Tracked[]? tracking = null) =>
            new(inSync ?? InSync, rebuilding ?? Rebuilding, tracking ?? Tracking, Paused, RepairGate);

        public Membership WithPause(TaskCompletionSource? paused) => new(InSync, Rebuilding, Tracking, paused, RepairGate);

        public Membership WithRepairGate(RegionGate? gate) => new(InSync, Rebuilding, Tracking, Paused, gate);

        public void Enter() => Interlocked.Increment(ref _inFlight);

        public void Exit()
        {
            // Full fences on both sides (Decrement here, Exchange in Retire): one of the two always sees the other.
            if (Interlocked.Decrement(ref _inFlight) == 0 && Volatile.Read(ref _retired) != 0)
            {
                _drained.TrySetResult();
            }
        }

        public Task Retire()
        {
            Interlocked.Exchange(ref _retired, 1);
            if (Volatile.Read(ref _inFlight) == 0)
            {
                _drained.TrySetResult();
            }
            return _drained.Task;
        }
    }

    /// <summary>
    /// Enters the current membership: a counter increment, nothing allocated. Re-checks after counting, so a change
    /// either counts in the membership that is current or retries on the new one.
    /// </summary>
    private Membership Enter()
    {
        while (true)
        {
            var membership = _membership;
            membership.Enter();
            if (ReferenceEquals(membership, _membership))
            {
                return membership;
            }
            membership.Exit();
        }
    }

    /// <summary>A change that met a paused membership leaves it, waits for the pause to end and enters again.</summary>
    private async ValueTask<Membership> EnterAfterPauseAsync(Membership membership, CancellationToken cancellationToken)
    {
        while (membership.Paused is { } paused)
        {
            membership.Exit();
            await paused.Task.WaitAsync(cancellationToken);
            membership = Enter();
        }
        return membership;
    }

    /// <summary>
    /// Quiesces the volume: new changes wait, and this returns once every change in flight has finished (drops
    /// included). Pass the result to <see cref="ResumeAsync"/>.
    /// </summary>
    private async Task<TaskCompletionSource> PauseAsync(CancellationToken cancellationToken)
    {
        var paused = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task drained;
        await _changing.WaitAsync(cancellationToken);
        try
        {
            drained = Swap(_membership.WithPause(paused));
        }
        finally
        {
            _changing.Release();
        }
        try
        {
            await drained.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            await ResumeAsync(paused);
            throw;
        }
        return paused;
    }

    private async Task ResumeAsync(TaskCompletionSource paused)
    {
        await _changing.WaitAsync(CancellationToken.None);
        try
        {
            _ = Swap(_membership.WithPause(null));
        }
        finally
        {
            _changing.Release();
        }
        paused.TrySetResult();
    }

    /// <summary>
    /// Makes <paramref name="next"/> current (under <see cref="_changing"/>) and returns a task that completes once
    /// every change that entered any earlier membership has left: after it, every change knows of this swap.
    /// </summary>
    private Task Swap(Membership next)
    {
        var previous = Interlocked.Exchange(ref _membership, next);
        var drained = previous.Retire();
        _earlierDrained = _earlierDrained.IsCompleted ? drained : Task.WhenAll(_earlierDrained, drained);
        return _earlierDrained;
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
                // Read before the drop is written: it can only move later as flushes complete, so this errs towards more.
                ulong missingSince = _activity.OldestUnflushedEpoch(at);
                ulong next;
                try
                {
                    next = await _inSyncSet.DropAsync([.. stillThere.Select(f => f.Replica)], at, missingSince, cancellationToken);
                }
                catch (ReplicaFencedException e)
                {
                    Fence(e.Message);
                    throw FencedException(e.Message);
                }
                Interlocked.Exchange(ref _epoch, (long)next);
                var tracking = current.Tracking.ToList();
                foreach (var replica in stillThere.Where(f => FindTracked(current.Tracking, f.Replica) is null))
                {
                    if (UnflushedSince(missingSince) is { } record)
                    {
                        tracking.Add(new Tracked(replica.Replica, record));
                    }
                }
                // Tracking starts in the same swap that stops sending: a change that no longer reaches the replica is marked.
                _ = Swap(current.With(inSync: [.. current.InSync.Except(stillThere)], tracking: [.. tracking]));
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

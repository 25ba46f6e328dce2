using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The control plane's failover duty, every tick: if the owner's node lost its lease (or restarted, which ends the
/// boot the ownership was for), promote an in-sync replica with <see cref="ReplicaSet.FailOver"/>, by compare-and-swap
/// on the epoch. It runs next to the store (never partitioned from it), like a leader-elected controller talking to
/// its local etcd member. Never promotes a replica that is not in sync: when none is up, the volume waits.
/// <para>
/// Gaps in production's rules that the seeds exposed, closed here under <see cref="SimOptions.SafeFailover"/>:
/// <c>FailOver</c>'s only test is "node up", so it promotes a replica that restarted and lost acknowledged writes
/// from its cache (nothing ever marks such a replica out of sync: see <see cref="DropRestarted"/>); and it demotes the
/// deposed owner at once, so a failover to a replica that crashed a moment ago cannot be undone (see the basis in
/// <see cref="Promote"/>). <c>ReplicaSet</c> also has no transition for an owner that comes back as the only in-sync
/// replica (<see cref="AfterEveryoneRestarted"/>, <see cref="RestartInPlace"/>).
/// </para>
/// </summary>
internal sealed class SimController(SimCluster cluster)
{
    public async Task RunAsync()
    {
        while (true)
        {
            Reconcile();
            await cluster.Sim.Delay(cluster.Options.ControllerTickUs);
        }
    }

    private void Reconcile()
    {
        var store = cluster.Store;
        if (cluster.Options.SafeFailover)
        {
            DropRestarted(store);
        }
        var set = store.Set;
        if (OwnerAlive(store, set))
        {
            Repair(set);
            return;
        }
        var next = Promote(store, set);
        if (next is null)
        {
            return;
        }
        store.TryCommit(set.Epoch, next, store.BootOf(next.Owner)!.Value);
    }

    /// <summary>
    /// A replica whose node restarted since it joined the in-sync set lost whatever acknowledged writes were still in
    /// its cache: it is no longer in sync, whatever its owner believes (an owner notices only when it next writes to
    /// it, and an owner cut off from the store cannot record it). The owner is left alone: dropping it is a failover.
    /// The owner, if serving, carries on: its own view is a superset of the new in-sync set.
    /// </summary>
    private static void DropRestarted(SimClusterStore store)
    {
        var set = store.Set;
        var restarted = set.InSyncRemotes.Where(m => store.BootOf(m.Node) != store.JoinedBoot[m.Node]).Select(m => m.Node).ToList();
        if (restarted.Count == 0)
        {
            return;
        }
        bool serving = store.ActivatedEpoch == set.Epoch;
        var next = set.Drop(restarted, "its node restarted: cached writes may be lost");
        store.TryCommit(set.Epoch, next, store.OwnerBoot);
        if (serving)
        {
            store.TryMarkActivated(next.Epoch, next.Owner, store.OwnerBoot);
        }
    }

    private bool OwnerAlive(SimClusterStore store, ReplicaSet set)
    {
        if (store.BootOf(set.Owner) != store.OwnerBoot)
        {
            return false; // the owner's node restarted: that boot's ownership is over
        }
        if ((cluster.Options.Bugs & SimBugs.IgnoreLeaseOnFailover) != 0)
        {
            return cluster.Sim.NowUs - store.LastHeardUs(set.Owner) < 2 * cluster.Options.HeartbeatUs;
        }
        return store.IsAlive(set.Owner);
    }

    private ReplicaSet? Promote(SimClusterStore store, ReplicaSet set)
    {
        if ((cluster.Options.Bugs & SimBugs.PromoteAnyReplica) != 0 && PromoteAny(store, set) is { } any)
        {
            return any;
        }
        if (!cluster.Options.SafeFailover)
        {
            return set.FailOver(store.IsAlive) ?? RestartInPlace(store, set, restarted: store.BootOf(set.Owner) != store.OwnerBoot);
        }
        // The set under which something may last have been acknowledged: the current one once its owner activated,
        // else the one before an unfinished failover — whose owner, deposed but complete, may take the volume back.
        var basis = store.ActivatedEpoch == set.Epoch ? set : store.ActivatedSet;
        bool Intact(string node) => store.IsAlive(node) && store.BootOf(node) == store.JoinedBoot[node];
        ReplicaSet? next;
        if (basis != set && basis.Owner != set.Owner && Intact(basis.Owner))
        {
            var restarted = basis.InSyncRemotes.Where(m => !Intact(m.Node)).Select(m => m.Node).ToList();
            next = restarted.Count == 0 ? basis : basis.Drop(restarted, "not reachable or restarted when its owner took the volume back");
        }
        else
        {
            // From the basis, not the current set: an owner that never served is as complete as any, so an unfinished
            // failover must not have marked it failed.
            next = basis.FailOver(Intact) ?? AfterEveryoneRestarted(store, basis);
        }
        return next is null ? null : next with { Epoch = set.Epoch + 1 };
    }

    /// <summary>
    /// Every replica in sync at the last served epoch restarted: each lost its cache, and each holds every write
    /// acknowledged durable (FUA or flushed) — an owner acknowledges only once every in-sync replica answered, and
    /// cannot go on without one whose connection broke (it restarted) before the store has dropped it. So any live one
    /// will do, the owner's node too ("restart in place", which ReplicaSet has no transition for).
    /// </summary>
    private static ReplicaSet? AfterEveryoneRestarted(SimClusterStore store, ReplicaSet basis)
    {
        if (!basis.InSync.All(m => store.BootOf(m.Node) != store.JoinedBoot[m.Node]))
        {
            return null; // a replica that may still hold every acknowledged write is only out of reach: wait for it
        }
        var next = store.IsAlive(basis.Owner) ? basis : basis.FailOver(store.IsAlive);
        foreach (var member in next?.InSync.Where(m => store.IsAlive(m.Node)) ?? [])
        {
            store.JoinedBoot[member.Node] = store.BootOf(member.Node)!.Value;
        }
        return next;
    }

    /// <summary>Production's rule (SafeFailover off): the owner's node came back as the only in-sync replica.</summary>
    private static ReplicaSet? RestartInPlace(SimClusterStore store, ReplicaSet set, bool restarted) =>
        set.InSyncRemotes.Any() || !store.IsAlive(set.Owner) || !restarted ? null : set with { Epoch = set.Epoch + 1 };

    /// <summary>The self-test's defect: any live replica will do, stale ones first.</summary>
    private static ReplicaSet? PromoteAny(SimClusterStore store, ReplicaSet set)
    {
        var candidate = set.Members.Where(m => m.Node != set.Owner && store.IsAlive(m.Node)).OrderBy(m => m.State == ReplicaState.InSync).FirstOrDefault();
        if (candidate is null)
        {
            return null;
        }
        return new ReplicaSet(set.Epoch + 1, candidate.Node, [.. set.Members.Select(m =>
            m.Node == set.Owner ? m with { State = ReplicaState.Failed, FailedAtEpoch = set.Epoch }
            : m.Node == candidate.Node ? m with { State = ReplicaState.InSync }
            : m)]);
    }

    /// <summary>
    /// Where rebuild plugs in: a failed replica whose node is back would be put into
    /// <see cref="ReplicaState.Rebuilding"/> here (<see cref="ReplicaSet.StartRebuild"/>), copied by its owner while it
    /// receives new writes, and admitted through <see cref="IInSyncSet.AdmitAsync"/>. Today's engine cannot rebuild,
    /// so a dropped replica stays dropped and the in-sync set only shrinks during a run.
    /// </summary>
    private static void Repair(ReplicaSet set) => _ = set;
}

using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The control plane's failover duty, every tick: if the owner's node lost its lease (or restarted, which ends the
/// boot the ownership was for), promote an in-sync replica whose node holds a lease with
/// <see cref="ReplicaSet.FailOver"/>, by compare-and-swap on the epoch. It runs next to the store (never partitioned
/// from it), like a leader-elected controller talking to its local etcd member. Never promotes a replica that is not
/// in sync: when none is up, the volume waits.
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
        if ((cluster.Options.Bugs & SimBugs.SkipEpochBump) != 0)
        {
            next = next with { Epoch = set.Epoch };
        }
        store.TryCommit(set.Epoch, next, store.BootOf(next.Owner)!.Value);
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
            return set.FailOver(store.IsAlive) ?? RestartInPlace(store, set);
        }
        // The set under which something may last have been acknowledged: the current one once its owner activated,
        // else the one before an unfinished failover — whose owner, deposed but complete, may take the volume back.
        var basis = store.ActivatedEpoch == set.Epoch ? set : store.ActivatedSet;
        bool Intact(string node) => store.IsAlive(node) && store.BootOf(node) == store.JoinedBoot[node];
        var next = basis != set && basis.Owner != set.Owner && Intact(basis.Owner) ? basis : basis.FailOver(Intact);
        if (next is null && basis.InSync.All(m => store.BootOf(m.Node) != store.JoinedBoot[m.Node]))
        {
            // Every in-sync replica restarted: each lost only its cache and none holds more than the others' durable
            // data, so any live one will do.
            next = basis.FailOver(store.IsAlive) ?? RestartInPlace(store, basis);
            foreach (var member in next?.InSync.Where(m => store.IsAlive(m.Node)) ?? [])
            {
                store.JoinedBoot[member.Node] = store.BootOf(member.Node)!.Value;
            }
        }
        return next is null ? null : next with { Epoch = set.Epoch + 1 };
    }

    /// <summary>The owner's node is the only one left and came back: it owns the volume again at a new epoch (ReplicaSet has no transition for this).</summary>
    private static ReplicaSet? RestartInPlace(SimClusterStore store, ReplicaSet set) =>
        !set.InSyncRemotes.Any() && store.IsAlive(set.Owner) && store.BootOf(set.Owner) != store.OwnerBoot ? set with { Epoch = set.Epoch + 1 } : null;

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

using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The control plane's failover duty, every tick, with production's rules: if the owner is gone
/// (<see cref="ReplicaSet.NeedsFailOver"/>: its lease expired, or its node restarted since it became the owner), pick
/// the next one with <see cref="ReplicaSet.FailOver"/> and write it by compare-and-swap on the epoch. Like production's
/// controller it sees a node's boot while the node's lease is valid, and nothing of it after. It runs next to the
/// store (never partitioned from it), like a leader-elected controller talking to its local etcd member.
/// <para>
/// The rules this simulation found missing (a replica that restarted and lost acknowledged writes from its cache was
/// promotable; a failover could not be undone; an owner that came back as the only in-sync replica had no transition)
/// now live in <see cref="ReplicaSet"/>; the rule before them stays available as a defect,
/// <see cref="SimBugs.FailOverWithoutBoots"/>, so the regression test can show it still loses writes here.
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
        var set = store.Set;
        var bootOf = BootsAsSeen(store, set);
        if (!set.NeedsFailOver(bootOf))
        {
            Repair(set);
            return;
        }
        var bugs = cluster.Options.Bugs;
        var next = (bugs & SimBugs.PromoteAnyReplica) != 0 && PromoteAny(store, set) is { } any ? any
            : (bugs & SimBugs.FailOverWithoutBoots) != 0 ? FailOverWithoutBoots(store, set, bootOf)
            : set.FailOver(bootOf);
        if (next is not null)
        {
            store.TryCommit(set.Epoch, next);
        }
    }

    /// <summary>The boots the rules are given: production's view, or what a defect under test makes of it.</summary>
    private Func<string, string?> BootsAsSeen(SimClusterStore store, ReplicaSet set)
    {
        var bugs = cluster.Options.Bugs;
        Func<string, string?> bootOf = store.LiveBootOf;
        if ((bugs & SimBugs.IgnoreLeaseOnFailover) != 0)
        {
            // Impatient: a node that missed two heartbeats counts as down, long before its lease expired.
            bootOf = node => cluster.Sim.NowUs - store.LastHeardUs(node) < 2 * cluster.Options.HeartbeatUs && store.BootOf(node) is { } boot
                ? SimClusterStore.Boot(boot) : null;
        }
        if ((bugs & SimBugs.FailOverWithoutBoots) != 0)
        {
            // The old rule: any live in-sync replica counts as intact; only the owner's own restart is noticed.
            var seen = bootOf;
            bootOf = node => seen(node) is not { } boot ? null
                : string.Equals(node, set.Owner, StringComparison.Ordinal) ? boot
                : set.Find(node)?.Boot ?? boot;
        }
        return bootOf;
    }

    /// <summary>The old rule: no failover undone, and the new owner serves at whatever boot its node is on now.</summary>
    private static ReplicaSet? FailOverWithoutBoots(SimClusterStore store, ReplicaSet set, Func<string, string?> bootOf) =>
        (set with { LastServed = null }).FailOver(bootOf) is { } next
            ? next with { Members = [.. next.Members.Select(m => m.Node == next.Owner ? m with { Boot = store.LiveBootOf(m.Node) } : m)] }
            : null;

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
            : m.Node == candidate.Node ? m with { State = ReplicaState.InSync, Boot = store.LiveBootOf(m.Node) }
            : m)]);
    }

    /// <summary>
    /// Where rebuild plugs in: a failed replica whose node is back would be put into
    /// <see cref="ReplicaState.Rebuilding"/> here (<see cref="ReplicaSet.StartRebuild"/>), copied by its owner while it
    /// receives new writes, and admitted through <see cref="IInSyncSet.AdmitAsync"/>. Today's simulated owner does not
    /// rebuild, so a dropped replica stays dropped and the in-sync set only shrinks during a run.
    /// </summary>
    private static void Repair(ReplicaSet set) => _ = set;
}

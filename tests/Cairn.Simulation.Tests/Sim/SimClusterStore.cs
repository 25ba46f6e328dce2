using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The cluster store (etcd's role): the authoritative <see cref="ReplicaSet"/> of the volume, changed only by
/// compare-and-swap on its epoch, and one lease per node, renewed by heartbeats. A lease carries the node's boot
/// (incarnation), as an etcd lease id would: the owner is the owner node in one boot, so a node that restarted no
/// longer owns anything until the controller says so again. Runs "at" the store endpoint: callers reach it through
/// <see cref="SimStoreClient"/>, the controller directly (it runs next to the store in this model).
/// </summary>
internal sealed class SimClusterStore(SimScheduler sim, ReplicaSet initial, int ownerBoot, long leaseTtlUs)
{
    private readonly Dictionary<string, (int Boot, long ExpiresUs)> _leases = new(StringComparer.Ordinal);

    public ReplicaSet Set { get; private set; } = initial;

    /// <summary>
    /// The boot each node was in when its replica (last) joined the in-sync set. Not in production's store yet: it is
    /// what lets the controller tell a replica that kept its cache from one that restarted and may have lost
    /// acknowledged writes (see <see cref="SimOptions.SafeFailover"/>).
    /// </summary>
    public Dictionary<string, int> JoinedBoot { get; } = initial.Members.ToDictionary(m => m.Node, _ => 0, StringComparer.Ordinal);

    /// <summary>The boot of the owner's node that the current owner assignment is for.</summary>
    public int OwnerBoot { get; private set; } = ownerBoot;

    /// <summary>
    /// The last epoch at which an owner was activated (serving, hence possibly acknowledging), and the set at that
    /// epoch. While the current epoch is newer, nothing was acknowledged since: every replica in sync at that epoch —
    /// the deposed owner too — still holds every acknowledged write. Not in production's store yet (see README.md).
    /// </summary>
    public ulong ActivatedEpoch { get; private set; }

    public ReplicaSet ActivatedSet { get; private set; } = initial;

    /// <summary>The owner says it is about to serve at <paramref name="epoch"/>; false when that epoch or ownership is no longer current.</summary>
    public bool TryMarkActivated(ulong epoch, string owner, int boot, StoreRequest? request = null)
    {
        if (Set.Epoch != epoch || !string.Equals(Set.Owner, owner, StringComparison.Ordinal) || OwnerBoot != boot)
        {
            return false;
        }
        ActivatedEpoch = epoch;
        ActivatedSet = Set;
        if (request is not null)
        {
            Activated?.Invoke(request);
        }
        return true;
    }

    /// <summary>An owner's activation landed (it may have been sent before its node crashed).</summary>
    public event Action<StoreRequest>? Activated;

    /// <summary>Every committed change, old and new, in order (the checker and the trace listen).</summary>
    public event Action<ReplicaSet, ReplicaSet, StoreRequest?>? Committed;

    /// <param name="request">Who sent the change and when, for changes that travelled the network (an owner's drop):
    /// it may land after its sender crashed.</param>
    public bool TryCommit(ulong expectedEpoch, ReplicaSet next, int ownerBoot, StoreRequest? request = null)
    {
        if (Set.Epoch != expectedEpoch)
        {
            return false;
        }
        var old = Set;
        Set = next;
        OwnerBoot = ownerBoot;
        sim.Trace($"store: epoch {old.Epoch} -> {next.Epoch}, owner {next.Owner}/boot {ownerBoot}, in sync [{string.Join(",", next.InSync.Select(m => m.Node))}]");
        Committed?.Invoke(old, next, request);
        return true;
    }

    public void Heartbeat(string node, int boot) => _leases[node] = (boot, sim.NowUs + leaseTtlUs);

    /// <summary>The node's lease has not expired (as the store's clock sees it).</summary>
    public bool IsAlive(string node) => _leases.TryGetValue(node, out var lease) && lease.ExpiresUs > sim.NowUs;

    public int? BootOf(string node) => _leases.TryGetValue(node, out var lease) ? lease.Boot : null;

    /// <summary>When the node was last heard from (the lease's start), for the controller's impatient-bug mode.</summary>
    public long LastHeardUs(string node) => _leases.TryGetValue(node, out var lease) ? lease.ExpiresUs - leaseTtlUs : long.MinValue;
}

/// <summary>
/// One node's (one boot's) connection to the store: each call travels the simulated network, can be lost or cut off
/// by a partition, and fails with <see cref="TimeoutException"/> when no answer came in time — in which case it may or
/// may not have been applied, as with a real store. Calls from a node that crashed never complete.
/// </summary>
internal sealed class SimStoreClient(SimCluster cluster, SimNode node, int incarnation)
{
    public long NowUs => cluster.Sim.NowUs;

    public Task<T> CallAsync<T>(string what, Func<SimClusterStore, T> operation)
    {
        var sim = cluster.Sim;
        var network = cluster.Network;
        if (node.Incarnation != incarnation)
        {
            return new TaskCompletionSource<T>().Task;
        }
        var reply = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool requestLost = network.Lost();
        sim.At(network.DelayUs(), () =>
        {
            if (requestLost || !network.Reachable(node.Name, SimNetwork.Store))
            {
                return;
            }
            var result = operation(cluster.Store);
            bool replyLost = network.Lost();
            sim.At(network.DelayUs(), () =>
            {
                if (!replyLost && node.Incarnation == incarnation && network.Reachable(node.Name, SimNetwork.Store))
                {
                    reply.TrySetResult(result);
                }
            });
        });
        sim.At(cluster.Options.StoreTimeoutUs, () =>
        {
            if (node.Incarnation == incarnation)
            {
                reply.TrySetException(new TimeoutException($"{node.Name}: no answer from the cluster store to {what}"));
            }
        });
        return reply.Task;
    }
}

/// <summary>The owner's <see cref="IInSyncSet"/>: a compare-and-swap on the epoch in the store, through the node's store client.</summary>
internal sealed class SimInSyncSet(SimStoreClient client, string owner, bool skipEpochBump = false) : IInSyncSet
{
    public async ValueTask<ulong> DropAsync(IReadOnlyList<string> replicas, ulong epoch, CancellationToken cancellationToken = default) =>
        skipEpochBump ? epoch : await ChangeAsync($"drop {string.Join(",", replicas)}", epoch, set => set.Drop([.. replicas], $"dropped by {owner} at epoch {epoch}"));

    public async ValueTask<ulong> AdmitAsync(string replica, ulong epoch, CancellationToken cancellationToken = default) =>
        await ChangeAsync($"admit {replica}", epoch, set => set.Admit(replica));

    private async Task<ulong> ChangeAsync(string what, ulong epoch, Func<ReplicaSet, ReplicaSet> change)
    {
        var request = new StoreRequest(owner, client.NowUs);
        var (next, current) = await client.CallAsync(what, store =>
        {
            if (store.Set.Epoch != epoch || !string.Equals(store.Set.Owner, owner, StringComparison.Ordinal))
            {
                return ((ulong?)null, store.Set.Epoch);
            }
            var changed = change(store.Set);
            store.TryCommit(epoch, changed, store.OwnerBoot, request);
            store.TryMarkActivated(changed.Epoch, owner, store.OwnerBoot); // only an active owner drops: it stays active
            return (changed.Epoch, changed.Epoch);
        });
        return next ?? throw new ReplicaFencedException($"{owner}: epoch {epoch} is no longer current (the store is at {current}): {what} refused");
    }
}

/// <summary>A change sent to the store by <paramref name="Node"/> at <paramref name="SentUs"/>.</summary>
internal sealed record StoreRequest(string Node, long SentUs);

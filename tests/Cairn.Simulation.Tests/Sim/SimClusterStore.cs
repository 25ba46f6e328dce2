using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The cluster store (etcd's role): the authoritative <see cref="ReplicaSet"/> of the volume, changed only by
/// compare-and-swap on its epoch, and one lease per node, renewed by heartbeats. A lease carries the node's boot
/// (incarnation), as production's node record does: the set records at which boot each replica joined the in-sync set
/// and the owner became the owner (<see cref="ReplicaMember.Boot"/>), and which set last served
/// (<see cref="ReplicaSet.LastServed"/>), exactly as production stores them. Runs "at" the store endpoint: callers
/// reach it through <see cref="SimStoreClient"/>, the controller directly (it runs next to the store in this model).
/// </summary>
internal sealed class SimClusterStore(SimScheduler sim, ReplicaSet initial, long leaseTtlUs)
{
    private readonly Dictionary<string, (int Boot, long ExpiresUs)> _leases = new(StringComparer.Ordinal);

    public ReplicaSet Set { get; private set; } = initial;

    /// <summary>A boot as replica sets record it (production records a node's start time; any unique name will do).</summary>
    public static string Boot(int incarnation) => incarnation.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The owner, on <paramref name="boot"/>, says it is about to serve at <paramref name="epoch"/>
    /// (<see cref="ReplicaSet.MarkServed"/>); false when that epoch, ownership or boot is no longer current. Neither the
    /// owner nor the in-sync set change, so this is no <see cref="Committed"/> change.
    /// </summary>
    public bool TryMarkServed(ulong epoch, string owner, int boot, StoreRequest? request = null)
    {
        if (Set.Epoch != epoch || !string.Equals(Set.Owner, owner, StringComparison.Ordinal))
        {
            return false;
        }
        try
        {
            Set = Set.MarkServed(owner, Boot(boot));
        }
        catch (InvalidOperationException)
        {
            return false; // the owner restarted since it became the owner
        }
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
    public bool TryCommit(ulong expectedEpoch, ReplicaSet next, StoreRequest? request = null)
    {
        if (Set.Epoch != expectedEpoch)
        {
            return false;
        }
        var old = Set;
        Set = next;
        sim.Trace($"store: epoch {old.Epoch} -> {next.Epoch}, owner {next.Owner}/boot {next.Find(next.Owner)?.Boot}, " +
            $"in sync [{string.Join(",", next.InSync.Select(m => m.Node))}]{(next.LastServed is { } served ? $", last served at epoch {served.Epoch}" : "")}");
        Committed?.Invoke(old, next, request);
        return true;
    }

    public void Heartbeat(string node, int boot) => _leases[node] = (boot, sim.NowUs + leaseTtlUs);

    /// <summary>The node's lease has not expired (as the store's clock sees it).</summary>
    public bool IsAlive(string node) => _leases.TryGetValue(node, out var lease) && lease.ExpiresUs > sim.NowUs;

    public int? BootOf(string node) => _leases.TryGetValue(node, out var lease) ? lease.Boot : null;

    /// <summary>A node's boot while its lease is valid, else null: what production's controller reads from node records,
    /// which live on the heartbeat lease — the <c>bootOf</c> of <see cref="ReplicaSet"/>'s rules.</summary>
    public string? LiveBootOf(string node) => IsAlive(node) && BootOf(node) is { } boot ? Boot(boot) : null;

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
    public async ValueTask<ulong> DropAsync(IReadOnlyList<string> replicas, ulong epoch, ulong missingSince, CancellationToken cancellationToken = default) =>
        skipEpochBump ? epoch : await ChangeAsync($"drop {string.Join(",", replicas)}", epoch, set => set.Drop([.. replicas], $"dropped by {owner} at epoch {epoch}", missingSince));

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
            var changed = change(store.Set); // keeps LastServed: an owner drops only once it serves
            store.TryCommit(epoch, changed, request);
            return (changed.Epoch, changed.Epoch);
        });
        return next ?? throw new ReplicaFencedException($"{owner}: epoch {epoch} is no longer current (the store is at {current}): {what} refused");
    }
}

/// <summary>A change sent to the store by <paramref name="Node"/> at <paramref name="SentUs"/>.</summary>
internal sealed record StoreRequest(string Node, long SentUs);

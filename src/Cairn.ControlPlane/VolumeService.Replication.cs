using System.Text.Json;
using Cairn.BlockStore;
using Cairn.ControlPlane.Placement;
using Cairn.ControlPlane.Replication;
using Cairn.Core;
using Cairn.Engine;
using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

// Replicated volumes on this node. A node holds a copy of a replicated volume either as its owner (it serves clients
// and writes to every in-sync replica) or as a replica (its replica service takes the owner's requests). Which one is
// decided by the spec's replica set in the cluster store alone; SyncWithClusterAsync makes this node match it
// whenever the set changes: it opens newly owned volumes, hosts new replicas, hands a volume over when the
// controller failed it over, and deletes copies the set no longer names.
public sealed partial class VolumeService
{
    private readonly Dictionary<string, HostedReplica> _hosted = new(StringComparer.Ordinal); // by volume name, guarded by _lock
    // Volumes this node was found deposed from when its lease came back, and the epoch the store had then; until the
    // view shows that epoch it still names this node the owner, and must not be acted on. Guarded by _mutations.
    private readonly Dictionary<string, ulong> _deposedUntil = new(StringComparer.Ordinal);
    private ReplicationContext? _replication;

    /// <summary>The replicas this node serves to owners elsewhere, by volume id: what the replica service looks up.</summary>
    public ReplicaCatalog ReplicaCatalog { get; } = new();

    /// <summary>Turns on replicated volumes (cluster mode); without it every volume has one copy.</summary>
    public void EnableReplication(ReplicationContext context) => _replication = context;

    public bool ReplicationEnabled => _replication is not null;

    private sealed record HostedReplica(VolumeSpec Spec, StoredVolume Volume, ReplicaTarget Target, ClosableDevice Device);

    /// <summary>The volumes this node hosts as a (non-owner) replica.</summary>
    public IReadOnlyList<string> HostedReplicas()
    {
        lock (_lock)
        {
            return [.. _hosted.Keys.Order(StringComparer.Ordinal)];
        }
    }

    /// <summary>Makes this node's copies match the replica sets in <paramref name="specs"/> (every spec in the cluster).</summary>
    public async Task SyncWithClusterAsync(IReadOnlyList<VolumeSpec> specs, CancellationToken cancellationToken = default)
    {
        if (_replication is not { } context)
        {
            return;
        }
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var byName = specs.ToDictionary(s => s.Name, StringComparer.Ordinal);
            foreach (var spec in specs.Where(s => s.Replication is not null))
            {
                await SyncOneAsync(spec, context, cancellationToken);
            }
            foreach (var gone in HostedReplicas().Where(name => !byName.TryGetValue(name, out var s) || !s.IsHeldBy(context.Node)))
            {
                await UnhostAsync(gone, deleteData: true, "the volume no longer has a replica on this node");
            }
            foreach (string name in _deposedUntil.Keys.Where(name => !byName.ContainsKey(name)).ToList())
            {
                _deposedUntil.Remove(name);
            }
        }
        finally
        {
            _mutations.Release();
        }
    }

    private async Task SyncOneAsync(VolumeSpec spec, ReplicationContext context, CancellationToken cancellationToken)
    {
        var set = spec.Replication!;
        if (_deposedUntil.TryGetValue(spec.Name, out ulong newer))
        {
            if (set.Epoch < newer)
            {
                return; // the view lags behind the store, which gave the volume to another node: reopening would serve it stale
            }
            _deposedUntil.Remove(spec.Name);
        }
        var owned = Find(spec.Name);
        bool ownsNow = string.Equals(set.Owner, context.Node, StringComparison.Ordinal);
        if (owned is not null && !ownsNow)
        {
            await DemoteAsync(owned, $"the volume was failed over to {set.Owner} at epoch {set.Epoch}");
            owned = null;
        }
        if (owned?.Replicated is { LeaseRenewed: true } && context.Lease.IsHeld && !await ProveOwnershipAsync(owned, context, cancellationToken))
        {
            return; // demoted: this node follows the new replica set once its view shows it
        }
        if (ownsNow)
        {
            if (set.Find(context.Node)?.Boot is { } ownerBoot && !string.Equals(ownerBoot, context.Boot, StringComparison.Ordinal))
            {
                // This node became the owner in an earlier run: its copy may have lost acknowledged writes that were only
                // in its cache. Serving it would serve them stale; the controller fails the volume over (or, when no
                // replica kept more, gives it back to this boot) and this node then follows the new set.
                _logger.LogDebug("volume {Volume}: owned by this node's earlier boot {Boot}; waiting for the controller", spec.Name, ownerBoot);
                return;
            }
            if (owned?.Replicated is { } running && set.LastServed is not null && set.Epoch > running.Device.Epoch)
            {
                // Failed over away from this node and given back while it ran (it was cut off from the store): the
                // replicas have seen the newer epoch and would refuse this one. Open again at the store's epoch.
                await DemoteAsync(owned, $"the volume was given back to this node at epoch {set.Epoch}; reopening");
                owned = null;
            }
            if (owned is null)
            {
                await OpenOwnedAsync(spec, cancellationToken);
            }
            else
            {
                if (!SameSpec(owned.Spec, spec))
                {
                    await RefreshSpecAsync(owned, cancellationToken);
                }
                await owned.Replicated!.ReconcileAsync(owned.Spec);
            }
            return;
        }
        if (set.Find(context.Node) is { } member)
        {
            Host(spec, member);
        }
    }

    private ReplicaSet ReplicaSetFor(string name, string localPool, IReadOnlyList<ReplicaPlacement> replicas)
    {
        if (_replication is not { } context)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument,
                $"volume '{name}' asks for {replicas.Count} replicas, but this node runs alone on an embedded store; start the nodes with --cluster etcd://... to replicate", "replicas");
        }
        if (replicas.Count > 0 && !string.Equals(replicas[0].Node, context.Node, StringComparison.Ordinal))
        {
            throw new CairnException(CairnErrorCode.Busy, $"volume '{name}' was placed with {replicas[0].Node} as its owner, not {context.Node}; retry");
        }
        return ReplicaSet.Create([(context.Node, localPool), .. replicas.Skip(1).Select(r => (r.Node, r.Pool))], context.CurrentBootOf);
    }

    /// <summary>Connects an owned replicated volume to its in-sync replicas (a new volume's nodes create their empty copies on seeing its spec).</summary>
    private async Task<VolumeState> OpenReplicatedAsync(VolumeSpec spec, StoredVolume stored, CancellationToken cancellationToken, WriteHistory? history = null)
    {
        var snapshots = _pools.Find(spec.Pool) is ISnapshotPool pool ? new PoolSnapshotImages(pool, spec.Id) : null;
        var replication = await OwnedReplication.OpenAsync(spec, stored, snapshots, history, _replication!, _logger, cancellationToken);
        var state = new VolumeState(spec, 0, stored, replication);
        await RefreshSpecAsync(state, cancellationToken); // opening may have dropped replicas: take the stored spec and its revision
        return state;
    }

    /// <summary>Whether two specs say the same. Records compare their lists (members, initiators) by reference, and every
    /// spec the view reads is a new object, so this compares what would be stored instead.</summary>
    private static bool SameSpec(VolumeSpec a, VolumeSpec b) => Serialize(a).AsSpan().SequenceEqual(Serialize(b));

    /// <summary>Starts serving a replicated volume this node owns: takes the copy out of the replica service, connects to the other in-sync replicas.</summary>
    private async Task OpenOwnedAsync(VolumeSpec spec, CancellationToken cancellationToken)
    {
        WriteHistory? history;
        lock (_lock)
        {
            history = _hosted.TryGetValue(spec.Name, out var hosted) && hosted.Spec.Id == spec.Id ? hosted.Target.History : null;
        }
        await UnhostAsync(spec.Name, deleteData: false, "this node now owns the volume");
        var pool = _pools.Find(spec.Pool);
        bool hadData = pool is not null && pool.TryGetVolume(spec.Id, out _);
        StoredVolume? stored;
        try
        {
            stored = EnsureStored(spec);
        }
        catch (Exception e)
        {
            _logger.LogError(e, "volume {Volume}: this node owns it but its copy cannot be opened", spec.Name);
            return;
        }
        if (stored is null)
        {
            return;
        }
        VolumeState state;
        try
        {
            state = await OpenReplicatedAsync(spec, stored, cancellationToken, history);
        }
        catch (ReplicaFencedException e)
        {
            _logger.LogWarning("volume {Volume}: not taking ownership: {Reason}", spec.Name, e.Message);
            if (!hadData)
            {
                // The view that named this node the owner was stale (the volume was deleted or moved meanwhile), and the
                // copy was created from it just now: it holds nothing, and nothing else would ever delete it.
                DeleteUnclaimedData(pool!, spec);
            }
            return;
        }
        lock (_lock)
        {
            _volumes[spec.Name] = state;
        }
        _logger.LogInformation("volume {Volume}: serving as owner at epoch {Epoch}", spec.Name, state.Replicated!.Device.Epoch);
        await state.Replicated.ReconcileAsync(state.Spec);
    }

    private void DeleteUnclaimedData(IVolumePool pool, VolumeSpec spec)
    {
        try
        {
            pool.DeleteVolume(spec.Id);
            _logger.LogInformation("volume {Volume}: deleted the empty copy {Id} created for it in pool {Pool}", spec.Name, spec.Id, pool.Name);
        }
        catch (Exception e)
        {
            _logger.LogError(e, "volume {Volume}: could not delete the empty copy {Id} in pool {Pool}", spec.Name, spec.Id, pool.Name);
        }
    }

    /// <summary>Another node owns the volume now: stop serving it (clients must reconnect to the new owner) and keep the copy as a replica.</summary>
    private async Task DemoteAsync(VolumeState state, string why)
    {
        List<ExportSession> sessions;
        lock (_lock)
        {
            _volumes.Remove(state.Spec.Name);
            sessions = [.. state.Sessions];
        }
        foreach (var session in sessions)
        {
            session.Revoke();
        }
        if (state.Replicated is { } replicated)
        {
            await replicated.DisposeAsync();
        }
        _logger.LogWarning("volume {Volume}: no longer served here: {Why}; revoked {Sessions} client sessions", state.Spec.Name, why, sessions.Count);
    }

    /// <summary>
    /// This node's lease was lost and granted again while it owned the volume: meanwhile the controller may have failed
    /// it over, and the view may not show that yet. Reads the store (after the new grant): when it still names this node
    /// the owner at the volume's epoch, serving resumes under the new grant; otherwise the volume is demoted. Returns
    /// whether this node still owns it.
    /// </summary>
    private async Task<bool> ProveOwnershipAsync(VolumeState state, ReplicationContext context, CancellationToken cancellationToken)
    {
        var replicated = state.Replicated!;
        long term = replicated.LeaseTerm; // before the read: the store's answer is at least as new as this grant
        var kv = await _store.GetAsync(KeyOf(state.Spec.Name), cancellationToken);
        var stored = kv is null ? null : JsonSerializer.Deserialize(kv.Value, ControlPlaneJson.Default.VolumeSpec);
        if (stored?.Replication is { } set && string.Equals(set.Owner, context.Node, StringComparison.Ordinal) && set.Epoch == replicated.Device.Epoch)
        {
            state.Spec = stored;
            state.ModRevision = kv!.ModRevision;
            replicated.Rebind(term);
            _logger.LogInformation("volume {Volume}: this node's lease was granted again and the store still names it the owner at epoch {Epoch}; serving again",
                state.Spec.Name, set.Epoch);
            return true;
        }
        if (stored?.Replication is { } now)
        {
            _deposedUntil[state.Spec.Name] = now.Epoch;
        }
        await DemoteAsync(state, stored?.Replication is { } then
            ? $"while this node's lease was lost, the volume went to {then.Owner} at epoch {then.Epoch}"
            : "the volume was deleted while this node's lease was lost");
        return false;
    }

    /// <summary>
    /// Re-reads a replicated volume's spec before an owner-side write of it (drops, admissions and the controller change
    /// it under the owner), and refuses when the store names another owner: a deposed owner whose view lags behind must
    /// not write the spec, nor act on it (a delete would remove its copy and the new owner's spec).
    /// </summary>
    private async Task RefreshOwnedSpecAsync(VolumeState state, CancellationToken cancellationToken)
    {
        var kv = await _store.GetAsync(KeyOf(state.Spec.Name), cancellationToken);
        var stored = kv is null ? null : JsonSerializer.Deserialize(kv.Value, ControlPlaneJson.Default.VolumeSpec);
        if (stored is null)
        {
            throw NotFound(state.Spec.Name);
        }
        if (stored.Replication is { } set && !string.Equals(set.Owner, _replication?.Node, StringComparison.Ordinal))
        {
            throw new CairnException(CairnErrorCode.Unavailable,
                $"volume '{state.Spec.Name}' is owned by node {set.Owner} now (epoch {set.Epoch}), not by {_replication?.Node}, whose view of the cluster lags behind; retry in a moment");
        }
        state.Spec = stored;
        state.ModRevision = kv!.ModRevision;
    }

    /// <summary>Re-reads an owned volume's spec and revision after someone else (a drop, the controller) changed it.</summary>
    private async Task RefreshSpecAsync(VolumeState state, CancellationToken cancellationToken)
    {
        var kv = await _store.GetAsync(KeyOf(state.Spec.Name), cancellationToken);
        if (kv is not null && JsonSerializer.Deserialize(kv.Value, ControlPlaneJson.Default.VolumeSpec) is { } spec)
        {
            state.Spec = spec;
            state.ModRevision = kv.ModRevision;
        }
    }

    /// <summary>Serves this node's copy of a volume owned elsewhere through the replica service, creating it empty when new.</summary>
    private void Host(VolumeSpec spec, ReplicaMember member)
    {
        lock (_lock)
        {
            if (_hosted.TryGetValue(spec.Name, out var hosted) && hosted.Spec.Id == spec.Id)
            {
                _hosted[spec.Name] = hosted with { Spec = spec };
                hosted.Target.History?.Observe(spec.Replication!);
                return;
            }
        }
        var pool = _pools.Find(member.Pool);
        if (pool is null)
        {
            _logger.LogError("volume {Volume}: its replica here belongs in pool {Pool}, which is not open on this node", spec.Name, member.Pool);
            return;
        }
        StoredVolume stored;
        bool createdHere = false;
        try
        {
            if (!pool.TryGetVolume(spec.Id, out var existing))
            {
                existing = pool.CreateVolume(spec.Id, spec.SizeBytes);
                createdHere = true;
                _logger.LogInformation("volume {Volume}: created an empty replica in pool {Pool}", spec.Name, member.Pool);
            }
            else if (existing.SizeBytes < spec.SizeBytes)
            {
                existing.Grow(spec.SizeBytes);
            }
            stored = existing;
        }
        catch (Exception e)
        {
            _logger.LogError(e, "volume {Volume}: cannot host its replica in pool {Pool}", spec.Name, member.Pool);
            return;
        }
        var device = new ClosableDevice(new VolumeEngine(spec.Name, stored));
        // A copy created here received every change through this target; an existing one may have received changes of
        // the current epoch in an earlier run of this node, which no history recorded.
        var set = spec.Replication!;
        var target = new ReplicaTarget(spec.Id, device, new StoredVolumeControl(stored, pool as ISnapshotPool, spec.Id))
        {
            History = new WriteHistory(createdHere ? 0 : set.Epoch + 1, set),
        };
        // A target starts at the epoch the store holds, not at 0: after this node restarted, a deposed owner that has
        // not noticed yet must be refused, not let in as the first sender. The current owner is at this epoch or newer.
        target.TryAdmit(set.Epoch);
        lock (_lock)
        {
            _hosted[spec.Name] = new HostedReplica(spec, stored, target, device);
        }
        ReplicaCatalog.Add(target);
    }

    /// <summary>Stops serving a hosted replica. Its epoch jumps to the maximum, so a sender still connected is told it is
    /// stale and fences itself, and in-flight requests drain before the copy is deleted or taken over.</summary>
    private async Task UnhostAsync(string name, bool deleteData, string why)
    {
        HostedReplica? hosted;
        lock (_lock)
        {
            if (!_hosted.Remove(name, out hosted))
            {
                return;
            }
        }
        ReplicaCatalog.Remove(hosted.Spec.Id);
        hosted.Target.TryAdmit(ulong.MaxValue);
        await hosted.Device.CloseAsync();
        if (deleteData)
        {
            var member = hosted.Spec.Replication?.Find(_replication!.Node);
            _logger.LogInformation("volume {Volume}: removing this node's replica: {Why}", name, why);
            DeleteStored(hosted.Spec with { Pool = member?.Pool ?? hosted.Spec.Pool }, why);
        }
    }

    /// <summary>
    /// Asks for <paramref name="replicas"/> copies of the volume. Only the policy changes here; the controller then adds
    /// replicas (which this owner copies the data to in the background) or removes surplus ones, while IO goes on.
    /// </summary>
    public async Task<VolumeInfo> SetReplicaCountAsync(string? name, int replicas, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(name);
        try
        {
            PlacementPolicy.ValidateReplicas(replicas);
        }
        catch (ArgumentException e)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, e.Message, "replicas");
        }
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var state = Find(name) ?? throw NotFound(name);
            if (state.Spec.Replication is null)
            {
                throw new CairnException(CairnErrorCode.InvalidArgument, _replication is null
                    ? $"volume '{name}' lives on a single node with an embedded store, where a volume has one copy; run the nodes with --cluster etcd://... to replicate"
                    : $"volume '{name}' was created before replication and keeps one copy; copy it into a new volume to replicate it", "replicas");
            }
            var writer = _replication!.Writer;
            var updated = await writer.UpdateSpecAsync(name, spec => spec with { Placement = (spec.Placement ?? PlacementPolicy.Default) with { Replicas = replicas } },
                cancellationToken) ?? throw NotFound(name);
            await RefreshSpecAsync(state, cancellationToken);
            _logger.LogInformation("volume {Volume}: replica count set to {Replicas} (has {Members})", name, replicas, updated.Replication!.Members.Count);
            return Describe(state);
        }
        finally
        {
            _mutations.Release();
        }
    }
}

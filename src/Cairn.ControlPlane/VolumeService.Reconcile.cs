using System.Text.Json;
using Cairn.BlockStore;
using Cairn.ClusterStore;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

// Startup: load every spec and make storage match it. Create and delete write the spec first and
// storage second, so after a crash storage can only lag the specs; this heals exactly that.
public sealed partial class VolumeService
{
    /// <summary>Loads the specs and reconciles the pools with them. Call once before serving.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        var range = await _store.RangeAsync(VolumesPrefix, cancellationToken);
        var specs = new List<(VolumeSpec Spec, long ModRevision)>();
        bool unreadable = false;
        foreach (var kv in range.Items)
        {
            try
            {
                var spec = JsonSerializer.Deserialize(kv.Value, ControlPlaneJson.Default.VolumeSpec)
                    ?? throw new JsonException("null spec");
                specs.Add((spec, kv.ModRevision));
            }
            catch (JsonException e)
            {
                _logger.LogError(e, "ignoring unreadable volume spec at {Key}", kv.Key);
                unreadable = true; // its data cannot be told from an orphan: delete no orphan this time
            }
        }
        // Orphans are judged against every spec in the cluster: data another node's spec names is never deleted here.
        DeleteOrphans(specs.Select(s => s.Spec.Id).ToHashSet(StringComparer.Ordinal), storeIsNew: unreadable || await StoreLooksNewAsync(range, cancellationToken));
        // Replicated volumes are opened by SyncWithClusterAsync: whether this node owns or hosts them is the replica set's call.
        var owned = specs.Where(s => _ownership.Owns(s.Spec) && s.Spec.Replication is null).ToList();
        foreach (var (spec, modRevision) in owned)
        {
            StoredVolume? stored = null;
            try
            {
                stored = EnsureStored(spec);
            }
            catch (Exception e)
            {
                // One volume that cannot be healed must not keep the node and every other volume down.
                _logger.LogError(e, "reconcile: volume {Volume} could not be brought in line with its spec; it stays unavailable", spec.Name);
            }
            var state = new VolumeState(spec, modRevision, stored);
            lock (_lock)
            {
                _volumes[spec.Name] = state;
            }
        }
        if (_ownership.Shared)
        {
            _logger.LogInformation("control plane ready: {Volumes} volumes of node {Node} in {Pools} pools; {Others} more volumes live on other nodes",
                owned.Count, _ownership.NodeName, _pools.Pools.Count, specs.Count - owned.Count);
        }
        else
        {
            _logger.LogInformation("control plane ready: {Volumes} volumes in {Pools} pools", owned.Count, _pools.Pools.Count);
        }
    }

    /// <summary>
    /// Whether the store shows no sign of ever having held this node's state, so unmatched local data must be kept.
    /// Embedded: never written. Shared: this node never registered in it (a fresh or wrong etcd cluster must not
    /// make a node wipe its pools); callers run this before the node registers.
    /// </summary>
    private async Task<bool> StoreLooksNewAsync(RangeResult volumes, CancellationToken cancellationToken)
    {
        if (!_ownership.Shared)
        {
            return volumes.Revision == 0;
        }
        return _ownership.NodeName is not { } node || await _store.GetAsync(ClusterKeys.Registration(node), cancellationToken) is null;
    }

    private void DeleteOrphans(HashSet<string> specIds, bool storeIsNew)
    {
        foreach (var pool in _pools.Pools)
        {
            foreach (var stored in pool.ListVolumes().Where(v => !specIds.Contains(v.Id)))
            {
                if (storeIsNew)
                {
                    // A never-written cluster store beside populated pools means a lost or wrong data dir, not a crash mid-delete: keep the data.
                    _logger.LogWarning("pool {Pool} holds volume data {Id} that no volume spec names, but the cluster store has no record of this node's volumes (or a spec is unreadable); keeping it (check --data-dir, --cluster and --node)", pool.Name, stored.Id);
                    continue;
                }
                _logger.LogWarning("reconcile: pool {Pool} holds volume data {Id} with no volume spec (a delete was interrupted); deleting it", pool.Name, stored.Id);
                try
                {
                    pool.DeleteVolume(stored.Id);
                }
                catch (Exception e)
                {
                    _logger.LogError(e, "reconcile: could not delete orphaned volume data {Id} in pool {Pool}", stored.Id, pool.Name);
                }
            }
        }
    }

    private StoredVolume? EnsureStored(VolumeSpec spec)
    {
        var pool = _pools.Find(spec.Pool);
        if (pool is null)
        {
            _logger.LogError("volume {Volume} lives in pool {Pool}, which is not configured on this node; it stays unavailable", spec.Name, spec.Pool);
            return null;
        }
        if (!pool.TryGetVolume(spec.Id, out var volume))
        {
            if (spec.Source is not null)
            {
                return FinishClone(spec, pool);
            }
            _logger.LogWarning("reconcile: volume {Volume} has a spec but no data {Id} in pool {Pool} (a create was interrupted); creating it", spec.Name, spec.Id, spec.Pool);
            return pool.CreateVolume(spec.Id, spec.SizeBytes);
        }
        if (volume.SizeBytes < spec.SizeBytes)
        {
            _logger.LogWarning("reconcile: volume {Volume} is {StoredBytes} bytes but its spec says {SpecBytes} (a grow was interrupted); growing it",
                spec.Name, volume.SizeBytes, spec.SizeBytes);
            volume.Grow(spec.SizeBytes);
        }
        return volume;
    }
}

using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.Replication;

namespace Cairn.ControlPlane.Replication;

/// <summary>
/// Changes a volume's replica set in the cluster store: read the spec, apply one <see cref="ReplicaSet"/> transition,
/// write it back by compare-and-swap on the spec's mod revision. A lost race re-reads and re-applies, so unrelated
/// spec changes (a grow, an access list) never turn into spurious failures, while the transition itself decides
/// (by throwing) whether it still makes sense on the newer spec.
/// </summary>
public sealed class ReplicaSetWriter(IClusterStore store)
{
    private const int MaxAttempts = 20;

    /// <summary>Applies <paramref name="change"/> to the volume's current spec (any field but the replica set); null when the volume is gone.</summary>
    public Task<VolumeSpec?> UpdateSpecAsync(string volume, Func<VolumeSpec, VolumeSpec> change, CancellationToken cancellationToken = default) =>
        UpdateCoreAsync(volume, spec => change(spec) with { Replication = spec.Replication, Node = spec.Node, Pool = spec.Pool }, null, cancellationToken);

    /// <summary>
    /// Applies <paramref name="change"/> to the volume's current spec. It returns the new set, or null to leave the spec
    /// alone. <paramref name="fence"/>, when given, must also hold (the controller's term). Returns the spec as stored
    /// afterwards, or null when the volume no longer exists or the fence failed.
    /// </summary>
    public Task<VolumeSpec?> UpdateAsync(string volume, Func<VolumeSpec, ReplicaSet?> change, Compare? fence = null,
        CancellationToken cancellationToken = default) =>
        UpdateCoreAsync(volume, spec => change(spec) is { } next ? spec.WithReplication(next) : null, fence, cancellationToken);

    private async Task<VolumeSpec?> UpdateCoreAsync(string volume, Func<VolumeSpec, VolumeSpec?> change, Compare? fence, CancellationToken cancellationToken)
    {
        string key = ClusterKeys.Volumes + volume;
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var kv = await store.GetAsync(key, cancellationToken);
            if (kv is null)
            {
                return null;
            }
            var spec = JsonSerializer.Deserialize(kv.Value, ControlPlaneJson.Default.VolumeSpec)
                ?? throw new JsonException($"volume spec at {key} is null");
            if (change(spec) is not { } updated)
            {
                return spec;
            }
            var compares = fence is null ? [Compare.ModRevisionIs(key, kv.ModRevision)] : new[] { Compare.ModRevisionIs(key, kv.ModRevision), fence };
            var result = await store.CommitAsync(Transaction.If(compares)
                .Then(TxnOp.Put(key, JsonSerializer.SerializeToUtf8Bytes(updated, ControlPlaneJson.Default.VolumeSpec))), cancellationToken);
            if (result.Succeeded)
            {
                return updated;
            }
            if (fence is not null && !await HoldsAsync(fence, cancellationToken))
            {
                return null;
            }
        }
        throw new CairnException(CairnErrorCode.Busy, $"volume '{volume}' kept changing while its spec was being updated; try again");
    }

    private async Task<bool> HoldsAsync(Compare fence, CancellationToken cancellationToken)
    {
        var kv = await store.GetAsync(fence.Key, cancellationToken);
        return kv is not null && kv.ModRevision == fence.Value;
    }
}

/// <summary>
/// The in-sync set of one volume as its owner changes it: every drop and admission is a <see cref="ReplicaSetWriter"/>
/// transition that checks this node still owns the volume at the epoch it believes current, and bumps the epoch.
/// </summary>
public sealed class SpecInSyncSet(ReplicaSetWriter writer, string volume, string owner) : IInSyncSet
{
    public async ValueTask<ulong> DropAsync(IReadOnlyList<string> replicas, ulong epoch, ulong missingSince, CancellationToken cancellationToken = default)
    {
        var spec = await WriteAsync(set => set.Drop([.. replicas], $"dropped by owner {owner} at epoch {epoch}: a request to it failed", missingSince),
            epoch, already: set => replicas.All(r => set.Find(r)?.State != ReplicaState.InSync), cancellationToken);
        return spec.Replication!.Epoch;
    }

    public async ValueTask<ulong> AdmitAsync(string replica, ulong epoch, CancellationToken cancellationToken = default)
    {
        var spec = await WriteAsync(set => set.Admit(replica), epoch, already: set => set.Find(replica)?.State == ReplicaState.InSync, cancellationToken);
        return spec.Replication!.Epoch;
    }

    /// <param name="already">Whether a newer set already shows the change: a retried write whose first attempt landed
    /// although its answer was lost. Accepted only while this node still owns the volume.</param>
    private async Task<VolumeSpec> WriteAsync(Func<ReplicaSet, ReplicaSet> transition, ulong epoch, Func<ReplicaSet, bool> already,
        CancellationToken cancellationToken)
    {
        VolumeSpec? spec;
        try
        {
            spec = await writer.UpdateAsync(volume, current =>
            {
                var set = current.Replication ?? throw Fenced("is no longer replicated");
                if (!string.Equals(set.Owner, owner, StringComparison.Ordinal))
                {
                    throw Fenced($"is now owned by {set.Owner} at epoch {set.Epoch}");
                }
                if (set.Epoch == epoch)
                {
                    return transition(set);
                }
                if (set.Epoch > epoch && already(set))
                {
                    return null;
                }
                throw Fenced($"is at epoch {set.Epoch}, not {epoch}");
            }, cancellationToken: cancellationToken);
        }
        catch (ClusterStoreUnavailableException e)
        {
            // Not acknowledged without the replica: the write fails, the replica stays in the set, the next write retries.
            throw new Core.BlockDeviceException(Core.BlockError.Io, $"volume '{volume}': cannot record a replica change in the cluster store: {e.Message}", e);
        }
        return spec ?? throw Fenced("was deleted");
    }

    private ReplicaFencedException Fenced(string why) => new($"volume '{volume}' {why}; this node ({owner}) must stop acknowledging writes");
}

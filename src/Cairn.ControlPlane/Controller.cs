using System.Text.Json;
using Cairn.ClusterStore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

/// <summary>
/// The cluster controller: runs on the elected node only (see <see cref="ControllerElection"/>). It reconciles the
/// observed cluster (its <see cref="ClusterView"/>, kept current by a watch) with what it has recorded, whenever the
/// cluster's state changes (nodes joining or going Down, registrations, specs — not heartbeats) and at least every
/// <see cref="ResyncInterval"/>. Today it judges each volume's health from its owner's state (Healthy, or Unavailable
/// while the owner is Down); replica repair and failover build on this loop.
/// Every write is one transaction conditioned on the leader key still carrying this leader's term, so a deposed leader
/// that has not noticed yet writes nothing. It keeps no state of its own: a new or restarted controller recomputes
/// everything from the view, so it is safe to stop at any moment.
/// </summary>
public sealed partial class Controller(string node, IClusterStore store, ClusterView view, Func<long> term, ILogger<Controller>? logger = null, TimeProvider? time = null)
{
    private readonly ILogger _logger = (ILogger?)logger ?? NullLogger.Instance;
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>A full pass even without changes, in case a write failed or a watch event was coalesced.</summary>
    public TimeSpan ResyncInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Runs until <paramref name="leading"/> is cancelled, i.e. until this node stops being the leader.</summary>
    public async Task RunAsync(CancellationToken leading)
    {
        _logger.LogInformation("controller running on node {Node} (term {Term})", node, term());
        try
        {
            while (!leading.IsCancellationRequested)
            {
                var changed = view.NextChangeAsync(leading);
                try
                {
                    await ReconcileAsync(leading);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _logger.LogWarning("controller pass failed ({Message}); retrying", e.Message);
                }
                await Task.WhenAny(changed, Task.Delay(ResyncInterval, _time, leading));
            }
        }
        catch (OperationCanceledException) when (leading.IsCancellationRequested)
        {
            // Leadership ended.
        }
        finally
        {
            _logger.LogInformation("controller on node {Node} stopped", node);
        }
    }

    /// <summary>One pass: writes the health records that differ from the judgement, deletes those of deleted volumes.
    /// Returns the number of writes, or -1 when the term is no longer current (another node leads).</summary>
    public async Task<int> ReconcileAsync(CancellationToken cancellationToken = default)
    {
        long fence = term();
        if (fence == 0)
        {
            return -1;
        }
        var nodes = view.PlacementCandidates().ToDictionary(n => n.Name, n => n.State, StringComparer.Ordinal);
        var boots = view.LiveBoots();
        string? BootOf(string name) => boots.GetValueOrDefault(name);
        int writes = await RepairReplicationAsync(fence, BootOf, cancellationToken);
        int resized = writes < 0 ? -1 : await KeepReplicaCountAsync(fence, nodes, BootOf, cancellationToken);
        if (resized < 0)
        {
            return -1;
        }
        writes += resized;
        var recorded = view.Health().ToDictionary(h => h.Volume, StringComparer.Ordinal);
        foreach (var volume in view.Volumes())
        {
            var (state, reason) = Judge(volume, nodes, BootOf);
            var old = recorded.GetValueOrDefault(volume.Name);
            recorded.Remove(volume.Name);
            if (old is not null && old.State == state && old.Reason == reason)
            {
                continue;
            }
            var health = new VolumeHealth(volume.Name, state, reason, old?.State == state ? old.Since : _time.GetUtcNow());
            if (!await FencedAsync(fence, TxnOp.Put(ClusterKeys.Health(volume.Name), JsonSerializer.SerializeToUtf8Bytes(health, ClusterJson.Default.VolumeHealth)), cancellationToken))
            {
                return -1;
            }
            writes++;
            _logger.LogInformation("volume {Volume} is {State}: {Reason}", volume.Name, state, reason);
        }
        foreach (var gone in recorded.Keys)
        {
            if (!await FencedAsync(fence, TxnOp.Delete(ClusterKeys.Health(gone)), cancellationToken))
            {
                return -1;
            }
            writes++;
        }
        return writes;
    }

    private static (VolumeHealthState State, string Reason) Judge(VolumeSpec volume, Dictionary<string, NodeState> nodes, Func<string, string?> bootOf)
    {
        if (volume.Node is not { } owner)
        {
            return (VolumeHealthState.Healthy, "served by the single node of an embedded store");
        }
        if (volume.Replication is { } set)
        {
            return JudgeReplicated(set, nodes, bootOf);
        }
        return nodes.TryGetValue(owner, out var state)
            ? state == NodeState.Down
                ? (VolumeHealthState.Unavailable, $"its node {owner} is Down")
                : (VolumeHealthState.Healthy, $"its node {owner} is {state}")
            : (VolumeHealthState.Unavailable, $"its node {owner} has not joined the cluster");
    }

    private async Task<bool> FencedAsync(long fence, TxnOp op, CancellationToken cancellationToken)
    {
        var result = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs(ClusterKeys.ControllerLeader, fence)).Then(op), cancellationToken);
        if (!result.Succeeded)
        {
            _logger.LogInformation("controller on node {Node} lost its term {Term}: another node leads; writing nothing more", node, fence);
        }
        return result.Succeeded;
    }
}

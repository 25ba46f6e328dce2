using Cairn.ClusterStore;
using Cairn.ControlPlane.Replication;
using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

// The controller's part in replication: fail a volume over when its owner's node is Down, and judge its health from
// its replicas. Every change is a replica-set transition written by compare-and-swap on the spec and fenced by the
// controller's term, so neither a deposed controller nor a concurrent owner change can be overwritten.
public sealed partial class Controller
{
    private ReplicaSetWriter Writer => field ??= new ReplicaSetWriter(store);

    /// <summary>Fails over every replicated volume whose owner's node is Down. Returns the number of writes, or -1 when the term is lost.</summary>
    private async Task<int> RepairReplicationAsync(long fence, Dictionary<string, NodeState> nodes, CancellationToken cancellationToken)
    {
        int writes = 0;
        foreach (var volume in view.Volumes())
        {
            if (volume.Replication is not { } set || IsUp(set.Owner, nodes))
            {
                continue;
            }
            var written = await Writer.UpdateAsync(volume.Name,
                current => current.Replication is { } now && !IsUp(now.Owner, nodes) ? now.FailOver(node => IsUp(node, nodes)) : null,
                Compare.ModRevisionIs(ClusterKeys.ControllerLeader, fence), cancellationToken);
            if (written is null && await store.GetAsync(ClusterKeys.Volumes + volume.Name, cancellationToken) is not null)
            {
                _logger.LogInformation("controller on node {Node} lost its term {Term}: another node leads; writing nothing more", node, fence);
                return -1;
            }
            if (written?.Replication is { } after && after.Epoch != set.Epoch && after.Owner != set.Owner)
            {
                writes++;
                _logger.LogWarning("volume {Volume}: owner {Old} is Down; failed over to {New} at epoch {Epoch}", volume.Name, set.Owner, after.Owner, after.Epoch);
            }
            else if (written is not null)
            {
                _logger.LogWarning("volume {Volume}: owner {Old} is Down and no in-sync replica is Up; waiting (promoting a stale replica would serve old data)",
                    volume.Name, set.Owner);
            }
        }
        return writes;
    }

    private static bool IsUp(string node, Dictionary<string, NodeState> nodes) =>
        nodes.TryGetValue(node, out var state) && state != NodeState.Down;

    private static (VolumeHealthState State, string Reason) JudgeReplicated(ReplicaSet set, Dictionary<string, NodeState> nodes)
    {
        if (!IsUp(set.Owner, nodes))
        {
            return (VolumeHealthState.Unavailable, $"its owner {set.Owner} is Down and no in-sync replica can take over");
        }
        var lagging = set.Members.Where(m => m.State != ReplicaState.InSync || !IsUp(m.Node, nodes)).ToList();
        if (lagging.Count == 0)
        {
            return (VolumeHealthState.Healthy, $"all {set.Members.Count} replicas in sync; owner {set.Owner}, epoch {set.Epoch}");
        }
        string detail = string.Join(", ", lagging.Select(m => $"{m.Node} {(IsUp(m.Node, nodes) ? m.State.ToString() : "Down")}"));
        return (VolumeHealthState.Degraded, $"{set.Members.Count - lagging.Count} of {set.Members.Count} replicas in sync ({detail}); owner {set.Owner}, epoch {set.Epoch}");
    }
}

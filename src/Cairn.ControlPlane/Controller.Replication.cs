using Cairn.ClusterStore;
using Cairn.ControlPlane.Placement;
using Cairn.ControlPlane.Replication;
using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

// The controller's part in replication: fail a volume over when its owner is gone (its node Down, or restarted since
// it became the owner), keep its replica count, and judge its health from its replicas. Every change is a replica-set
// transition written by compare-and-swap on the spec and fenced by the controller's term, so neither a deposed
// controller nor a concurrent owner change can be overwritten. Replicas whose node restarted are left to their owner
// to drop (its epoch must stay the store's); the failover rule alone keeps them from being promoted.
public sealed partial class Controller
{
    private ReplicaSetWriter Writer => field ??= new ReplicaSetWriter(store);

    /// <summary>
    /// Fails over every replicated volume whose owner is gone: its node is Down, or restarted since it became the owner
    /// (<see cref="ReplicaSet.NeedsFailOver"/>). The new owner is chosen by <see cref="ReplicaSet.FailOver"/>: never a
    /// replica whose node restarted since it joined the in-sync set (it may have lost acknowledged writes from its
    /// cache), and while the last failover has not been taken up, the deposed owner may get the volume back.
    /// Returns the number of writes, or -1 when the term is lost.
    /// </summary>
    private async Task<int> RepairReplicationAsync(long fence, Func<string, string?> bootOf, CancellationToken cancellationToken)
    {
        int writes = 0;
        foreach (var volume in view.Volumes())
        {
            if (volume.Replication is not { } set || !set.NeedsFailOver(bootOf))
            {
                continue;
            }
            var written = await Writer.UpdateAsync(volume.Name, current => current.Replication?.FailOver(bootOf),
                Compare.ModRevisionIs(ClusterKeys.ControllerLeader, fence), cancellationToken);
            if (written is null && await store.GetAsync(ClusterKeys.Volumes + volume.Name, cancellationToken) is not null)
            {
                _logger.LogInformation("controller on node {Node} lost its term {Term}: another node leads; writing nothing more", node, fence);
                return -1;
            }
            string why = bootOf(set.Owner) is null ? "is Down" : "restarted since it became the owner";
            if (written?.Replication is { } after && after.Epoch > set.Epoch)
            {
                writes++;
                _logger.LogWarning("volume {Volume}: owner {Old} {Why}; {New} owns it now at epoch {Epoch} (in sync: {InSync})", volume.Name, set.Owner, why,
                    after.Owner, after.Epoch, string.Join(", ", after.InSync.Select(m => m.Node)));
            }
            else if (written is not null)
            {
                _logger.LogWarning("volume {Volume}: owner {Old} {Why} and no in-sync replica that surely kept its writes is Up; waiting " +
                    "(promoting a replica that missed writes, or restarted and lost some, would serve old data)", volume.Name, set.Owner, why);
            }
        }
        return writes;
    }

    /// <summary>When this controller first saw each node Down; a replica is replaced only after <see cref="ReplaceAfter"/>,
    /// so a node that returns from a short outage is resynced from what changed instead of copied anew elsewhere.</summary>
    private readonly Dictionary<string, DateTimeOffset> _downSince = new(StringComparer.Ordinal);

    /// <summary>How long a replica's node may stay Down before the replica is replaced on another node.</summary>
    public TimeSpan ReplaceAfter { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Keeps each replicated volume at its asked-for replica count: adds replicas (placed away from the others, as the
    /// spread policy asks) when there are too few or when one's node has been Down longer than <see cref="ReplaceAfter"/>
    /// (that one is removed in the same write), and removes replicas that are not in sync when there are too many. New
    /// replicas start out of sync; their owner copies the data to them. Returns the number of writes, or -1 when the term is lost.
    /// </summary>
    private async Task<int> KeepReplicaCountAsync(long fence, Dictionary<string, NodeState> nodes, Func<string, string?> bootOf,
        CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        foreach (var (name, state) in nodes)
        {
            if (state == NodeState.Down)
            {
                _downSince.TryAdd(name, now);
            }
            else
            {
                _downSince.Remove(name);
            }
        }
        int writes = 0;
        var candidates = view.PlacementCandidates();
        foreach (var volume in view.Volumes())
        {
            // An unfinished failover (LastServed set) is left alone: undoing it needs the members as they were.
            if (volume.Replication is not { } set || set.NeedsFailOver(bootOf) || set.LastServed is not null
                || Resize(volume, set, nodes, candidates, now) is not { } next)
            {
                continue;
            }
            var written = await Writer.UpdateAsync(volume.Name, current => set.SameAs(current.Replication) ? next : null,
                Compare.ModRevisionIs(ClusterKeys.ControllerLeader, fence), cancellationToken);
            if (written is null && await store.GetAsync(ClusterKeys.Volumes + volume.Name, cancellationToken) is not null)
            {
                return -1;
            }
            if (next.SameAs(written?.Replication))
            {
                writes++;
                _logger.LogInformation("volume {Volume}: replicas now {Replicas}", volume.Name,
                    string.Join(", ", next.Members.Select(m => $"{m.Node} {m.State}")));
            }
        }
        return writes;
    }

    /// <summary>The replica set with replicas added or removed to meet the policy, or null when it already does (or cannot yet).</summary>
    private ReplicaSet? Resize(VolumeSpec volume, ReplicaSet set, Dictionary<string, NodeState> nodes, IReadOnlyList<NodeCandidate> candidates,
        DateTimeOffset now)
    {
        int desired = volume.Placement?.Replicas ?? set.Members.Count;
        var gone = set.Members.Where(m => m.Node != set.Owner && m.State != ReplicaState.InSync && !IsUp(m.Node, nodes)
            && _downSince.TryGetValue(m.Node, out var since) && now - since >= ReplaceAfter).ToList();
        var next = set;
        if (set.Members.Count > desired)
        {
            // Too many: shed copies that are not in sync, dead ones first. In-sync ones stay: dropping one is the owner's call.
            foreach (var extra in set.Members.Where(m => m.State != ReplicaState.InSync && m.Node != set.Owner)
                .OrderBy(m => IsUp(m.Node, nodes)).Take(set.Members.Count - desired))
            {
                next = next.Remove(extra.Node);
            }
            return next.SameAs(set) ? null : next;
        }
        int missing = desired - (set.Members.Count - gone.Count);
        if (missing <= 0)
        {
            return null;
        }
        var kept = set.Members.Where(m => !gone.Contains(m)).ToList();
        var placed = PlaceMore(volume, kept, set.Members, candidates, missing);
        foreach (var replaced in gone.Take(placed.Count))
        {
            next = next.Remove(replaced.Node); // only as many as have a replacement: a dead replica may yet come back
        }
        foreach (var added in placed)
        {
            next = next.Add(added.Node, added.Pool);
        }
        return next.SameAs(set) ? null : next;
    }

    /// <summary>Places up to <paramref name="count"/> more replicas on nodes holding none, in failure domains the kept replicas do not use when the policy asks.</summary>
    private static List<ReplicaPlacement> PlaceMore(VolumeSpec volume, IReadOnlyList<ReplicaMember> kept, IReadOnlyList<ReplicaMember> all,
        IReadOnlyList<NodeCandidate> candidates, int count)
    {
        var policy = volume.Placement ?? PlacementPolicy.Default;
        var byName = candidates.ToDictionary(c => c.Name, StringComparer.Ordinal);
        var excluded = all.Select(m => m.Node).ToHashSet(StringComparer.Ordinal);
        string? Domain(NodeCandidate c) => policy.Spread switch
        {
            SpreadLevel.Zone => c.Zone,
            SpreadLevel.Rack => c.Zone + "/" + c.Rack,
            _ => null,
        };
        var usedDomains = kept.Select(m => byName.TryGetValue(m.Node, out var c) ? Domain(c) : null).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var request = new PlacementRequest(volume.Name, volume.SizeBytes, new PlacementPolicy(1, policy.Spread, policy.Mode));
        var placed = new List<ReplicaPlacement>();
        for (int i = 0; i < count; i++)
        {
            // The placer spreads within one request; across the replicas a volume already has, spreading is done here.
            var apart = candidates.Where(c => Domain(c) is not { } d || !usedDomains.Contains(d)).ToList();
            var decision = Placer.Place(request with { ExcludedNodes = excluded }, apart);
            if (!decision.Succeeded && policy.Mode == SpreadMode.Preferred)
            {
                decision = Placer.Place(request with { ExcludedNodes = excluded }, candidates);
            }
            if (!decision.Succeeded)
            {
                break;
            }
            var chosen = decision.Replicas[0];
            placed.Add(chosen);
            excluded.Add(chosen.Node);
            if (byName.TryGetValue(chosen.Node, out var node) && Domain(node) is { } domain)
            {
                usedDomains.Add(domain);
            }
        }
        return placed;
    }

    private static bool IsUp(string node, Dictionary<string, NodeState> nodes) =>
        nodes.TryGetValue(node, out var state) && state != NodeState.Down;

    private static (VolumeHealthState State, string Reason) JudgeReplicated(ReplicaSet set, Dictionary<string, NodeState> nodes, Func<string, string?> bootOf)
    {
        if (set.NeedsFailOver(bootOf))
        {
            string gone = IsUp(set.Owner, nodes) ? "restarted since it became the owner" : "is Down";
            return (VolumeHealthState.Unavailable, set.Members.Count == 1
                ? $"its node {set.Owner} {gone}"
                : $"its owner {set.Owner} {gone} and no in-sync replica can take over");
        }
        // A replica whose node restarted since it joined is in sync in name only: its owner drops and resyncs it.
        var lagging = set.Members.Where(m => m.State != ReplicaState.InSync || !IsUp(m.Node, nodes) || ReplicaSet.HasRestarted(m, bootOf)).ToList();
        if (lagging.Count == 0)
        {
            return (VolumeHealthState.Healthy, set.Members.Count == 1
                ? $"its node {set.Owner} is {nodes.GetValueOrDefault(set.Owner)}"
                : $"all {set.Members.Count} replicas in sync; owner {set.Owner}, epoch {set.Epoch}");
        }
        string detail = string.Join(", ", lagging.Select(m => $"{m.Node} {(!IsUp(m.Node, nodes) ? "Down" : m.State == ReplicaState.InSync ? "restarted, to be resynced" : m.State.ToString())}"));
        return (VolumeHealthState.Degraded, $"{set.Members.Count - lagging.Count} of {set.Members.Count} replicas in sync ({detail}); owner {set.Owner}, epoch {set.Epoch}");
    }
}

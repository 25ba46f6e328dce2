using Cairn.Core;

namespace Cairn.ControlPlane.Placement;

/// <summary>
/// Chooses nodes and pools for a volume's replicas. Pure: the same cluster view and request give the same decision, so
/// a dry run shows exactly what a create would do. Rules, in order: never two replicas on one node; skip Down and
/// Draining nodes and nodes without a pool with room; spread over zones or racks as the policy asks; among the rest,
/// prefer the pool with the least provisioned per byte of capacity, then the most free bytes, then the name.
/// </summary>
public static class Placer
{
    /// <summary>A pool with less free space than this (or than the volume's size, if smaller) takes no new volume.</summary>
    public const long MinimumFreeBytes = 1L << 30;

    public static PlacementDecision Place(PlacementRequest request, IEnumerable<NodeCandidate> nodes)
    {
        PlacementPolicy.ValidateReplicas(request.Policy.Replicas);
        long needed = Math.Min(request.SizeBytes, MinimumFreeBytes);
        var verdicts = new List<NodeVerdict>();
        var ranked = new List<Ranked>();
        foreach (var node in nodes.OrderBy(n => n.Name, StringComparer.Ordinal))
        {
            if (Exclude(request, node, needed) is { } reason)
            {
                verdicts.Add(new NodeVerdict(node.Name, node.Zone, node.Rack, null, NodeVerdictKind.Excluded, reason));
            }
            else
            {
                ranked.Add(new Ranked(node, BestPool(node, needed)));
            }
        }
        ranked.Sort(static (a, b) => CompareRank(a.Pool, b.Pool, a.Node.Name, b.Node.Name));

        // A pinned node takes replica 0, the owner; the other replicas go where the rules say.
        var pinned = request.PinnedNode is { } name ? ranked.FirstOrDefault(r => r.Node.Name == name) : null;
        var chosen = request.PinnedNode is not null && pinned is null ? [] : Choose(request.Policy, ranked, pinned);
        if (chosen.Count < request.Policy.Replicas)
        {
            verdicts.AddRange(ranked.Select(r => Verdict(r, NodeVerdictKind.NotChosen, "eligible, but the policy cannot be met")));
            return new PlacementDecision(request, [], Sorted(verdicts), ShortfallReason(request, ranked, verdicts));
        }
        for (int i = 0; i < ranked.Count; i++)
        {
            var candidate = ranked[i];
            int replica = chosen.IndexOf(candidate);
            verdicts.Add(replica >= 0
                ? Verdict(candidate, NodeVerdictKind.Chosen, ChosenReason(request.Policy, chosen, replica, candidate == pinned), replica)
                : Verdict(candidate, NodeVerdictKind.NotChosen, NotChosenReason(request.Policy, chosen, candidate)));
        }
        var replicas = chosen.Select(c => new ReplicaPlacement(c.Node.Name, c.Pool.Name, c.Node.Zone, c.Node.Rack)).ToList();
        return new PlacementDecision(request, replicas, Sorted(verdicts), null);
    }

    private sealed record Ranked(NodeCandidate Node, PoolCandidate Pool);

    private static string? Exclude(PlacementRequest request, NodeCandidate node, long needed)
    {
        if (request.PinnedNode is { } pinned && pinned != node.Name && request.Policy.Replicas == 1)
        {
            return $"the request pins node {pinned}";
        }
        if (request.ExcludedNodes?.Contains(node.Name) == true)
        {
            return "already holds a replica of this volume";
        }
        if (node.State == NodeState.Down)
        {
            return "node is Down";
        }
        if (node.State == NodeState.Draining)
        {
            return "node is Draining (takes no new volumes)";
        }
        if (node.Pools.Count == 0)
        {
            return "node reports no pools";
        }
        long largest = node.Pools.Max(p => p.FreeBytes);
        return largest < needed
            ? $"no pool has room: the largest has {ByteSize.Format(largest)} free, a new volume needs {ByteSize.Format(needed)}"
            : null;
    }

    private static PoolCandidate BestPool(NodeCandidate node, long needed) =>
        node.Pools.Where(p => p.FreeBytes >= needed).Order(Comparer<PoolCandidate>.Create(static (a, b) => CompareRank(a, b, a.Name, b.Name))).First();

    private static int CompareRank(PoolCandidate a, PoolCandidate b, string nameA, string nameB)
    {
        int byRatio = a.ProvisionedRatio.CompareTo(b.ProvisionedRatio);
        if (byRatio != 0)
        {
            return byRatio;
        }
        int byFree = b.FreeBytes.CompareTo(a.FreeBytes);
        return byFree != 0 ? byFree : string.CompareOrdinal(nameA, nameB);
    }

    /// <summary>
    /// Fills replica slots one by one with the candidate that shares the fewest failure domains with those already chosen
    /// (zones first, then racks, up to the policy's level), the best-ranked among equals, after <paramref name="first"/>
    /// when the request pinned it. A required spread admits only candidates sharing nothing at the policy's level.
    /// </summary>
    private static List<Ranked> Choose(PlacementPolicy policy, List<Ranked> ranked, Ranked? first)
    {
        var chosen = new List<Ranked>(policy.Replicas);
        if (first is not null)
        {
            chosen.Add(first);
        }
        while (chosen.Count < policy.Replicas)
        {
            Ranked? best = null;
            (int Zone, int Rack) bestOverlap = (int.MaxValue, int.MaxValue);
            foreach (var candidate in ranked)
            {
                if (chosen.Contains(candidate))
                {
                    continue;
                }
                var overlap = Overlap(policy.Spread, chosen, candidate.Node);
                if (policy.Mode == SpreadMode.Required && SharesRequiredDomain(policy.Spread, overlap))
                {
                    continue;
                }
                if (overlap.CompareTo(bestOverlap) < 0)
                {
                    (best, bestOverlap) = (candidate, overlap);
                }
            }
            if (best is null)
            {
                break;
            }
            chosen.Add(best);
        }
        return chosen;
    }

    private static (int Zone, int Rack) Overlap(SpreadLevel level, List<Ranked> chosen, NodeCandidate node)
    {
        int zone = level == SpreadLevel.Zone ? chosen.Count(c => c.Node.Zone == node.Zone) : 0;
        int rack = level >= SpreadLevel.Rack ? chosen.Count(c => SameRack(c.Node, node)) : 0;
        return (zone, rack);
    }

    private static bool SharesRequiredDomain(SpreadLevel level, (int Zone, int Rack) overlap) => level switch
    {
        SpreadLevel.Zone => overlap.Zone > 0,
        SpreadLevel.Rack => overlap.Rack > 0,
        _ => false,
    };

    /// <summary>Racks are named within their zone: rack "r1" in zone "a" and in zone "b" are different racks.</summary>
    private static bool SameRack(NodeCandidate a, NodeCandidate b) => a.Zone == b.Zone && a.Rack == b.Rack;

    private static string Domain(SpreadLevel level, NodeCandidate node) => level switch
    {
        SpreadLevel.Zone => node.Zone,
        SpreadLevel.Rack => $"{node.Zone}/{node.Rack}",
        _ => node.Name,
    };

    private static string Unit(SpreadLevel level, int count) => level switch
    {
        SpreadLevel.Zone => count == 1 ? "zone" : "zones",
        SpreadLevel.Rack => count == 1 ? "rack" : "racks",
        _ => count == 1 ? "node" : "nodes",
    };

    private static string ShortfallReason(PlacementRequest request, List<Ranked> ranked, List<NodeVerdict> verdicts)
    {
        var policy = request.Policy;
        if (request.PinnedNode is { } pinned && verdicts.FirstOrDefault(v => v.Node == pinned && v.Kind == NodeVerdictKind.Excluded) is { } refused)
        {
            return $"the request pins node {pinned}, which cannot take it; excluded {pinned}: {refused.Reason}";
        }
        if (request.PinnedNode is { } unknown && ranked.All(r => r.Node.Name != unknown) && verdicts.All(v => v.Node != unknown))
        {
            return $"the request pins node {unknown}, which is not in the cluster";
        }
        var level = policy.Mode == SpreadMode.Required ? policy.Spread : SpreadLevel.Node;
        var domains = ranked.Select(r => Domain(level, r.Node)).Distinct().Order(StringComparer.Ordinal).ToList();
        string have = domains.Count == 0 ? "none has one" : $"{domains.Count} {(domains.Count == 1 ? "has" : "have")} one ({string.Join(", ", domains)})";
        string need = level == SpreadLevel.Node
            ? $"{policy.Replicas} replica{(policy.Replicas == 1 ? "" : "s")} need{(policy.Replicas == 1 ? "s" : "")} {policy.Replicas} eligible {Unit(level, policy.Replicas)}; {(domains.Count == 0 ? "there are none" : $"there {(domains.Count == 1 ? "is" : "are")} {domains.Count} ({string.Join(", ", domains)})")}"
            : $"{policy.Replicas} replicas need {policy.Replicas} {Unit(level, policy.Replicas)} with an eligible node; {have}";
        var excluded = verdicts.Where(v => v.Kind == NodeVerdictKind.Excluded).Select(v => $"{v.Node}: {v.Reason}").ToList();
        return excluded.Count == 0 ? need : $"{need}; excluded {string.Join("; ", excluded)}";
    }

    private static string ChosenReason(PlacementPolicy policy, List<Ranked> chosen, int replica, bool pinned)
    {
        var candidate = chosen[replica];
        string reason = $"replica {replica}{(pinned && policy.Replicas > 1 ? " (the owner: the request pins it)" : "")}: pool {candidate.Pool.Name} ({Figures(candidate.Pool)})";
        var earlier = chosen.Take(replica).ToList();
        var overlap = Overlap(policy.Spread, earlier, candidate.Node);
        if (overlap.Zone > 0 || overlap.Rack > 0)
        {
            string shared = overlap.Zone > 0 ? $"zone {candidate.Node.Zone}" : $"rack {candidate.Node.Zone}/{candidate.Node.Rack}";
            reason += $"; shares {shared} with an earlier replica: no other eligible node avoids it, and the spread is only preferred";
        }
        return reason;
    }

    private static string NotChosenReason(PlacementPolicy policy, List<Ranked> chosen, Ranked candidate)
    {
        if (policy.Mode == SpreadMode.Required && policy.Spread != SpreadLevel.Node)
        {
            var holder = chosen.FirstOrDefault(c => Domain(policy.Spread, c.Node) == Domain(policy.Spread, candidate.Node));
            if (holder is not null)
            {
                return $"{Unit(policy.Spread, 1)} {Domain(policy.Spread, candidate.Node)} already holds replica {chosen.IndexOf(holder)} (on {holder.Node.Name})";
            }
        }
        return $"eligible, ranked below the chosen nodes (pool {candidate.Pool.Name}: {Figures(candidate.Pool)})";
    }

    private static string Figures(PoolCandidate pool) =>
        $"{pool.ProvisionedRatio * 100:0}% provisioned of {ByteSize.Format(pool.CapacityBytes)}, {ByteSize.Format(pool.FreeBytes)} free";

    private static NodeVerdict Verdict(Ranked r, NodeVerdictKind kind, string reason, int? replica = null) =>
        new(r.Node.Name, r.Node.Zone, r.Node.Rack, r.Pool.Name, kind, reason, replica);

    private static List<NodeVerdict> Sorted(List<NodeVerdict> verdicts) =>
        [.. verdicts.OrderBy(v => v.Kind).ThenBy(v => v.Replica ?? int.MaxValue).ThenBy(v => v.Node, StringComparer.Ordinal)];
}

namespace Cairn.ControlPlane.Placement;

/// <summary>One pool as placement sees it: what the node last reported plus what specs already promise out of it.</summary>
/// <param name="ProvisionedBytes">The sum of the sizes of the volumes placed in this pool. Thin volumes take no space until
/// written, so free bytes alone would send every new volume to the same pool; provisioning spreads the promises.</param>
public sealed record PoolCandidate(string Name, long CapacityBytes, long FreeBytes, long ProvisionedBytes)
{
    /// <summary>Promised bytes per byte of capacity: the first ranking key.</summary>
    public double ProvisionedRatio => CapacityBytes <= 0 ? double.PositiveInfinity : (double)ProvisionedBytes / CapacityBytes;
}

/// <summary>One node as placement sees it.</summary>
public sealed record NodeCandidate(string Name, string Zone, string Rack, NodeState State, IReadOnlyList<PoolCandidate> Pools);

/// <summary>What to place: the volume's size and policy, and nodes that must not be used (e.g. ones already holding a replica).</summary>
/// <param name="PinnedNode">When set, the node that takes the volume (the caller asked for it by name): its only copy, or
/// with several replicas the owner, the others placed by the rules.</param>
public sealed record PlacementRequest(string Volume, long SizeBytes, PlacementPolicy Policy, IReadOnlySet<string>? ExcludedNodes = null, string? PinnedNode = null);

/// <summary>Where one replica goes.</summary>
public sealed record ReplicaPlacement(string Node, string Pool, string Zone, string Rack);

/// <summary>What placement concluded about one node, and why.</summary>
/// <param name="Pool">The pool it would use (or did use), when the node is eligible.</param>
/// <param name="Replica">The replica index it received (0-based), or null.</param>
public sealed record NodeVerdict(string Node, string Zone, string Rack, string? Pool, NodeVerdictKind Kind, string Reason, int? Replica = null);

public enum NodeVerdictKind
{
    /// <summary>Received a replica.</summary>
    Chosen,
    /// <summary>Could have taken a replica, but others ranked higher or its domain was taken.</summary>
    NotChosen,
    /// <summary>A rule excluded it (Down, Draining, no space, already holds a replica).</summary>
    Excluded,
}

/// <summary>The result of placement: the chosen replicas, or the reason the policy cannot be met, and a verdict per node.</summary>
public sealed record PlacementDecision(
    PlacementRequest Request, IReadOnlyList<ReplicaPlacement> Replicas, IReadOnlyList<NodeVerdict> Verdicts, string? FailureReason)
{
    public bool Succeeded => FailureReason is null;

    /// <summary>Throws the failure as a <see cref="CairnException"/> (503: the cluster, not the request, falls short).</summary>
    public PlacementDecision ThrowIfFailed() =>
        Succeeded ? this : throw new CairnException(CairnErrorCode.Unavailable, $"cannot place volume '{Request.Volume}': {FailureReason}", "spread");
}

namespace Cairn.ControlPlane;

/// <summary>
/// Which volume specs this node stores and serves. On an embedded (single-node) store every spec is this node's.
/// On a shared store (etcd) a node owns only the specs that name it: it opens and serves those, and its startup
/// reconcile deletes local data only when no spec anywhere in the cluster refers to it.
/// </summary>
/// <param name="NodeName">Recorded in new specs; null leaves specs unowned (tests, older callers).</param>
/// <param name="Shared">True when other nodes write to the same store.</param>
public sealed record VolumeOwnership(string? NodeName, bool Shared)
{
    public static VolumeOwnership SingleNode(string? nodeName) => new(nodeName, false);

    public static VolumeOwnership Clustered(string nodeName)
    {
        ArgumentException.ThrowIfNullOrEmpty(nodeName);
        return new(nodeName, true);
    }

    /// <summary>Whether this node stores and serves the volume. A shared store never hands an unowned (null) spec to anyone.</summary>
    public bool Owns(VolumeSpec spec) => !Shared || string.Equals(spec.Node, NodeName, StringComparison.Ordinal);
}

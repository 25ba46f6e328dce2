using System.Net;
using Cairn.Replication;

namespace Cairn.ControlPlane.Replication;

/// <summary>What a node needs to own and host replicated volumes: the cluster store writer, its lease, and where other nodes' replica services listen.</summary>
/// <param name="Node">This node's name.</param>
/// <param name="Lease">Whether this node can still prove its epochs; an owner stops acknowledging IO once it cannot.</param>
/// <param name="ReplicaEndpointOf">A live node's replica service address, or null while it is Down or has none.</param>
/// <param name="Boot">This node's current boot (<see cref="NodeRecord.Boot"/>): an owner serves only for the boot it became owner at.</param>
/// <param name="BootOf">A live node's current boot as this node's view shows it, or null while it is Down: replica sets
/// record it, and a replica whose node's boot changed since may have lost writes from its cache.</param>
/// <param name="ReadBootAsync">The same, read from the cluster store itself (<see cref="ClusterService.GetBootAsync"/>):
/// for decisions that must not rest on a view that may lag, such as which replicas a new owner may trust.</param>
public sealed record ReplicationContext(string Node, ReplicaSetWriter Writer, IOwnerLease Lease, Func<string, EndPoint?> ReplicaEndpointOf,
    string Boot, Func<string, string?> BootOf, Func<string, CancellationToken, Task<string?>> ReadBootAsync)
{
    /// <summary>A node's current boot, this node's own without asking the view (which may not show this run yet).</summary>
    public string? CurrentBootOf(string node) => string.Equals(node, Node, StringComparison.Ordinal) ? Boot : BootOf(node);

    /// <summary>How long a new owner waits for each in-sync replica to answer before dropping it from the in-sync set.</summary>
    public TimeSpan ConnectWithin { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long an owner's client requests wait for a lapsed lease to be proven again before they fail
    /// (<see cref="ReplicatedVolume.LeaseWait"/>): the lease's TTL, so a late keep-alive is a pause, not an IO error.
    /// </summary>
    public TimeSpan LeaseWait { get; init; }

    /// <summary>The clock that dates finished rebuilds.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Parses "host:port" as published in a node record.</summary>
    public static EndPoint? ParseEndpoint(string? address)
    {
        if (string.IsNullOrEmpty(address))
        {
            return null;
        }
        if (IPEndPoint.TryParse(address, out var ip))
        {
            return ip;
        }
        int colon = address.LastIndexOf(':');
        return colon > 0 && int.TryParse(address.AsSpan(colon + 1), out int port) ? new DnsEndPoint(address[..colon], port) : null;
    }
}

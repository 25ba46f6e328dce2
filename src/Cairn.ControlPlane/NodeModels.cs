using System.Text.Json;
using System.Text.Json.Serialization;

namespace Cairn.ControlPlane;

/// <summary>Who this node is: its name (its identity across restarts) and its failure domains.</summary>
public sealed record NodeIdentity(string Name, string Zone = "default", string Rack = "default");

/// <summary>One pool's figures as a node last reported them.</summary>
public sealed record NodePool(string Name, long CapacityBytes, long UsedBytes, long FreeBytes);

/// <summary>
/// A live node, under <c>/cairn/nodes/NAME</c>, attached to the node's heartbeat lease: it exists exactly while the node is Up.
/// The node rewrites it every heartbeat with fresh pool figures.
/// </summary>
/// <param name="StartedAt">When this run of the node's daemon started: kept while it runs (a lease lost and granted
/// again does not change it), new at every restart. It names the node's current boot (<see cref="Boot"/>).</param>
public sealed record NodeRecord(
    string Name, string? ApiAddress, string? NbdAddress, string Zone, string Rack,
    IReadOnlyList<NodePool> Pools, DateTimeOffset StartedAt, DateTimeOffset HeartbeatAt, string? ReplicaAddress = null)
{
    /// <summary>
    /// The node's boot, as replica sets record it (<see cref="Cairn.Replication.ReplicaMember.Boot"/>): a replica
    /// whose node's boot changed may have lost writes from its cache. Derived from <see cref="StartedAt"/>, which every
    /// node has always published, so nodes of every version can be judged.
    /// </summary>
    [JsonIgnore]
    public string Boot => BootOf(StartedAt);

    /// <summary>The boot named by a start time: its UTC instant to the tick (a restart cannot land on the same tick).</summary>
    public static string BootOf(DateTimeOffset startedAt) => startedAt.UtcDateTime.ToString("O", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>
/// A node that joined the cluster, under <c>/cairn/node-registry/NAME</c>, with no lease, so a Down node still lists.
/// Holds the node's static facts as of its last start and the admin's Draining flag (which survives restarts).
/// </summary>
public sealed record NodeRegistration(
    string Name, string? ApiAddress, string? NbdAddress, string Zone, string Rack,
    IReadOnlyList<NodePool> Pools, DateTimeOffset RegisteredAt, DateTimeOffset LastStartedAt, bool Draining);

[JsonConverter(typeof(JsonStringEnumConverter<NodeState>))]
public enum NodeState
{
    /// <summary>Heartbeating, accepting new work.</summary>
    Up,
    /// <summary>Its heartbeat lease expired (or it stopped): its record is gone, its registration stays.</summary>
    Down,
    /// <summary>Heartbeating, but the admin asked that it take no new work (and, later, be emptied).</summary>
    Draining,
}

/// <summary>What the cluster knows of one node: registration merged with its live record, if any.</summary>
/// <param name="LastHeartbeat">Null while Down: the live record went with the lease.</param>
public sealed record NodeInfo(
    string Name, NodeState State, bool Draining, string? ApiAddress, string? NbdAddress, string Zone, string Rack,
    IReadOnlyList<NodePool> Pools, DateTimeOffset? StartedAt, DateTimeOffset? LastHeartbeat, DateTimeOffset RegisteredAt);

/// <summary>The controller's key, <c>/cairn/controller/leader</c>, attached to the leader's lease.</summary>
public sealed record LeaderRecord(string Node, DateTimeOffset ElectedAt);

/// <summary>The cluster as seen from this node.</summary>
/// <param name="Store">"embedded" or "etcd".</param>
/// <param name="Leader">The controller's node, or null while none is elected.</param>
public sealed record ClusterStatus(string Store, string ThisNode, string? Leader, DateTimeOffset? LeaderSince, int NodesUp, int NodesDown, int NodesDraining);

/// <summary>A volume's health as the controller judged it from the cluster's state.</summary>
/// <param name="State">Healthy, or Unavailable while its data cannot be served.</param>
/// <param name="Reason">Why, in words (e.g. "node n2 is Down").</param>
/// <param name="Since">When the volume entered this state.</param>
public sealed record VolumeHealth(string Volume, VolumeHealthState State, string Reason, DateTimeOffset Since);

[JsonConverter(typeof(JsonStringEnumConverter<VolumeHealthState>))]
public enum VolumeHealthState
{
    Healthy,
    /// <summary>Served, but with fewer in-sync replicas than asked for: a further failure could lose it.</summary>
    Degraded,
    Unavailable,
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(VolumeHealth))]
[JsonSerializable(typeof(NodeRecord))]
[JsonSerializable(typeof(NodeRegistration))]
[JsonSerializable(typeof(LeaderRecord))]
internal sealed partial class ClusterJson : JsonSerializerContext;

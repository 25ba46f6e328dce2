using System.Text.Json;
using System.Text.Json.Serialization;
using Cairn.ControlPlane.Placement;
using Cairn.Core;
using Cairn.Replication;

namespace Cairn.ControlPlane;

/// <summary>A volume's desired state, stored as JSON under <c>/cairn/volumes/NAME</c> in the cluster store.</summary>
/// <param name="Node">
/// The node that owns (stores and serves) the volume. Null in specs written before clustering, which belong to the
/// single node of an embedded store. Volume names are unique in the whole cluster; ownership is per node.
/// </param>
/// <param name="Placement">Replica count and spread the volume was placed by; null in specs written before placement (one replica).</param>
/// <param name="Source">For a clone, the snapshot it was made from (null for other volumes).</param>
/// <param name="IscsiAccess">Who may log in over iSCSI (allow list, CHAP secrets); null = anyone, no authentication.</param>
/// <param name="Replication">
/// The volume's replicas, owner and epoch when it is replicated (more than one copy); null for a volume with one copy
/// on <paramref name="Node"/>. Its owner and the owner's pool are always <paramref name="Node"/> and <paramref name="Pool"/>:
/// change it only through <see cref="WithReplication"/>.
/// </param>
public sealed record VolumeSpec(string Name, string Id, long SizeBytes, string Pool, DateTimeOffset CreatedAt, string? Node = null,
    PlacementPolicy? Placement = null, VolumeSource? Source = null, IscsiAccess? IscsiAccess = null, ReplicaSet? Replication = null)
{
    /// <summary>This spec with a new replica set, keeping <see cref="Node"/> and <see cref="Pool"/> those of its owner.</summary>
    public VolumeSpec WithReplication(ReplicaSet set) =>
        this with { Replication = set, Node = set.Owner, Pool = set.Find(set.Owner)?.Pool ?? Pool };

    /// <summary>Whether <paramref name="node"/> holds a copy of the volume (as owner or replica).</summary>
    public bool IsHeldBy(string? node) =>
        string.Equals(Node, node, StringComparison.Ordinal) || (node is not null && Replication?.Contains(node) == true);

    /// <summary>Every (node, pool) holding a copy.</summary>
    public IEnumerable<(string? Node, string Pool)> Copies() =>
        Replication is { } set ? set.Members.Select(m => ((string?)m.Node, m.Pool)) : [(Node, Pool)];
}

public sealed record ClientInfo(string Client, DateTimeOffset ConnectedAt);

/// <summary>
/// A finished rebuild of one replica, as its owner measured it: a delta (only regions written while the replica was
/// away) or a full copy, the bytes sent as data, the bytes erased by trims and zeroings (no payload on the wire), and
/// the time from connecting to the replica until it was admitted to the in-sync set.
/// </summary>
public sealed record RebuildReport(bool Delta, long DataBytes, long ErasedBytes, double Seconds, DateTimeOffset FinishedAt)
{
    public string Kind => Delta ? "delta" : "full";

    /// <summary>Data bytes copied per second, in MB (10^6 bytes) per second.</summary>
    public double DataMegabytesPerSecond => Seconds > 0 ? DataBytes / Seconds / 1e6 : 0;

    public static RebuildReport Of(RebuildSummary summary, TimeSpan elapsed, DateTimeOffset finishedAt) =>
        new(summary.Delta, summary.DataBytes, summary.ErasedBytes, elapsed.TotalSeconds, finishedAt);
}

/// <summary>What the control plane reports about a volume: desired state plus what is observed now.</summary>
/// <param name="ExportAddress">Where clients attach, e.g. nbd://127.0.0.1:10809/NAME; null while no frontend listens.</param>
/// <param name="Available">False when the volume's pool is not open on this node (its data cannot be served).</param>
/// <param name="Node">The node that owns and serves the volume.</param>
/// <param name="Iscsi">The volume's iSCSI portal, target and LUN; null while no iSCSI target listens.</param>
/// <param name="IscsiAccess">Who may log in over iSCSI; null = anyone. Carries secrets: the API shows only user names.</param>
/// <param name="Replication">Replicas, owner and epoch of a replicated volume; null for one copy.</param>
/// <param name="RebuildPercent">Percent copied of each replica being rebuilt, by node.</param>
/// <param name="LastRebuilds">The last rebuild the owner finished of each replica, by node (since the owner opened the volume).</param>
public sealed record VolumeInfo(
    string Name,
    string Id,
    long SizeBytes,
    long AllocatedBytes,
    string Pool,
    DateTimeOffset CreatedAt,
    string? ExportAddress,
    IReadOnlyList<ClientInfo> Clients,
    bool Available,
    string? Node = null,
    IscsiAddress? Iscsi = null,
    PlacementPolicy? Placement = null,
    IscsiAccess? IscsiAccess = null,
    ReplicaSet? Replication = null,
    IReadOnlyDictionary<string, double>? RebuildPercent = null,
    IReadOnlyDictionary<string, RebuildReport>? LastRebuilds = null);

/// <param name="Fault">Why the pool refuses IO (its drive failed), or null while it is healthy.</param>
public sealed record PoolInfo(string Name, string Directory, long CapacityBytes, long UsedBytes, long FreeBytes, int VolumeCount, string? Fault = null);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(VolumeSpec))]
[JsonSerializable(typeof(ReplicaSet))]
internal sealed partial class ControlPlaneJson : JsonSerializerContext;

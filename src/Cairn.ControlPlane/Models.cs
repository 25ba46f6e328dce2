using System.Text.Json;
using System.Text.Json.Serialization;
using Cairn.ControlPlane.Placement;
using Cairn.Core;

namespace Cairn.ControlPlane;

/// <summary>A volume's desired state, stored as JSON under <c>/cairn/volumes/NAME</c> in the cluster store.</summary>
/// <param name="Node">
/// The node that owns (stores and serves) the volume. Null in specs written before clustering, which belong to the
/// single node of an embedded store. Volume names are unique in the whole cluster; ownership is per node.
/// </param>
/// <param name="Placement">Replica count and spread the volume was placed by; null in specs written before placement (one replica).</param>
/// <param name="Source">For a clone, the snapshot it was made from (null for other volumes).</param>
/// <param name="IscsiAccess">Who may log in over iSCSI (allow list, CHAP secrets); null = anyone, no authentication.</param>
public sealed record VolumeSpec(string Name, string Id, long SizeBytes, string Pool, DateTimeOffset CreatedAt, string? Node = null,
    PlacementPolicy? Placement = null, VolumeSource? Source = null, IscsiAccess? IscsiAccess = null);

public sealed record ClientInfo(string Client, DateTimeOffset ConnectedAt);

/// <summary>What the control plane reports about a volume: desired state plus what is observed now.</summary>
/// <param name="ExportAddress">Where clients attach, e.g. nbd://127.0.0.1:10809/NAME; null while no frontend listens.</param>
/// <param name="Available">False when the volume's pool is not open on this node (its data cannot be served).</param>
/// <param name="Node">The node that owns and serves the volume.</param>
/// <param name="Iscsi">The volume's iSCSI portal, target and LUN; null while no iSCSI target listens.</param>
/// <param name="IscsiAccess">Who may log in over iSCSI; null = anyone. Carries secrets: the API shows only user names.</param>
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
    IscsiAccess? IscsiAccess = null);

public sealed record PoolInfo(string Name, string Directory, long CapacityBytes, long UsedBytes, long FreeBytes, int VolumeCount);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(VolumeSpec))]
internal sealed partial class ControlPlaneJson : JsonSerializerContext;

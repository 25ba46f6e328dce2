using System.Text.Json;
using System.Text.Json.Serialization;
using Cairn.ControlPlane;
using Cairn.ControlPlane.Placement;
using Cairn.Core;
using Cairn.Replication;
using Microsoft.AspNetCore.Http;

namespace Cairn.Api;

/// <summary>
/// POST /api/v1/volumes. <c>size</c> is a string with a unit ("10GiB", "512MiB") or a number of bytes. With
/// <c>source</c> the volume is a clone of that snapshot (<c>size</c> optional, at least the snapshot's); a clone lives
/// on its source's node, so placement does not run for it.
/// </summary>
/// <param name="Replicas">How many replicas placement finds room for (default 1).</param>
/// <param name="Spread">"node", "rack" or "zone", optionally ":required" (default) or ":preferred".</param>
/// <param name="Node">Pins the volume to this node instead of letting placement choose (placement's rules still apply); with
/// several replicas this node is the owner and placement chooses where the others go.</param>
/// <param name="Pool">With <paramref name="Node"/>: the pool on that node.</param>
/// <param name="PlacedOn">Set by the node that ran placement when it passes a create to the chosen owner: every copy's
/// "node/pool", the owner first, so the owner does not place again and come to a different answer.</param>
public sealed record CreateVolumeRequest(string? Name, JsonElement? Size, int? Replicas = null, string? Spread = null, string? Node = null, string? Pool = null,
    VolumeSourceRequest? Source = null, IReadOnlyList<string>? PlacedOn = null);

/// <summary>PATCH /api/v1/volumes/{name}: grows the volume to <c>size</c> and/or asks for <c>replicas</c> copies.</summary>
public sealed record UpdateVolumeRequest(JsonElement? Size, int? Replicas = null);

public sealed record ClientResponse(string Client, DateTimeOffset ConnectedAt);

/// <summary>PUT /api/v1/volumes/{name}/iscsi-access: replaces who may log in. <c>{}</c> opens the volume to anyone.</summary>
/// <param name="AllowedInitiators">Initiator names (iqn./eui./naa.) allowed to log in; empty or absent = any.</param>
/// <param name="Chap">CHAP the initiator must pass (secret 12-16 bytes); absent = no authentication.</param>
/// <param name="MutualChap">Credentials the target proves back when the initiator asks (needs chap, another secret).</param>
public sealed record IscsiAccessRequest(IReadOnlyList<string>? AllowedInitiators, ChapRequest? Chap, ChapRequest? MutualChap)
{
    public IscsiAccess ToAccess() => new(AllowedInitiators ?? [], Chap?.ToCredentials(), MutualChap?.ToCredentials());
}

public sealed record ChapRequest(string? User, string? Secret)
{
    public ChapCredentials ToCredentials() => new(User ?? "", Secret ?? "");
}

/// <summary>Who may log in; user names only, never secrets.</summary>
public sealed record IscsiAccessResponse(IReadOnlyList<string> AllowedInitiators, bool Chap, string? ChapUser, bool MutualChap, string? MutualChapUser)
{
    public static IscsiAccessResponse From(IscsiAccess? a) =>
        new(a?.AllowedInitiators ?? [], a?.Chap is not null, a?.Chap?.User, a?.MutualChap is not null, a?.MutualChap?.User);
}

/// <summary>How an iSCSI initiator reaches the volume, who may, and the open-iscsi commands that log in.</summary>
/// <param name="Login">The iscsiadm lines to run in order; secrets appear as placeholders.</param>
public sealed record IscsiResponse(string Portal, string Target, int Lun, IscsiAccessResponse Access, IReadOnlyList<string> Login)
{
    public static IscsiResponse From(IscsiAddress address, IscsiAccess? access) =>
        new(address.Portal, address.Target, address.Lun, IscsiAccessResponse.From(access), LoginCommands(address, access));

    private static List<string> LoginCommands(IscsiAddress a, IscsiAccess? access)
    {
        string node = $"iscsiadm -m node -T {a.Target} -p {a.Portal}";
        var lines = new List<string> { $"iscsiadm -m discovery -t sendtargets -p {a.Portal}" };
        void Set(string name, string value) => lines.Add($"{node} -o update -n node.session.auth.{name} -v {value}");
        if (access?.Chap is { } chap)
        {
            Set("authmethod", "CHAP");
            Set("username", chap.User);
            Set("password", "'<chap secret>'");
        }
        if (access?.MutualChap is { } mutual)
        {
            Set("username_in", mutual.User);
            Set("password_in", "'<mutual chap secret>'");
        }
        lines.Add($"{node} --login");
        return lines;
    }
}

/// <summary>A volume. Byte counts are numbers; the unsuffixed twins ("size", "allocated") are for people.</summary>
/// <param name="Export">Where to attach, e.g. nbd://127.0.0.1:10809/NAME; null while no frontend listens.</param>
/// <param name="Available">False when the volume's pool is not open on this node.</param>
/// <param name="Node">The node that owns and serves the volume.</param>
public sealed record VolumeResponse(
    string Name,
    string Id,
    long SizeBytes,
    string Size,
    long AllocatedBytes,
    string Allocated,
    string Pool,
    DateTimeOffset CreatedAt,
    string? Export,
    IReadOnlyList<ClientResponse> Clients,
    bool Available,
    string? Node,
    IscsiResponse? Iscsi,
    PlacementPolicyResponse Placement,
    VolumeHealthResponse? Health = null,
    ulong? Epoch = null,
    IReadOnlyList<ReplicaResponse>? Replicas = null)
{
    public static VolumeResponse From(VolumeInfo v) => new(
        v.Name, v.Id, v.SizeBytes, ByteSize.Format(v.SizeBytes), v.AllocatedBytes, ByteSize.Format(v.AllocatedBytes), v.Pool, v.CreatedAt,
        v.ExportAddress, [.. v.Clients.Select(c => new ClientResponse(c.Client, c.ConnectedAt))], v.Available, v.Node,
        v.Iscsi is { } i ? IscsiResponse.From(i, v.IscsiAccess) : null, PlacementPolicyResponse.From(v.Placement ?? PlacementPolicy.Default),
        Epoch: v.Replication?.Epoch, Replicas: ReplicaResponse.From(v.Node, v.Pool, v.Replication, v.RebuildPercent, v.LastRebuilds));
}

/// <summary>One copy of a volume: where it lives, whether it is the owner, and whether it is in sync (InSync, Rebuilding, Failed).</summary>
/// <param name="Progress">Percent copied while Rebuilding (as its owner last saw it).</param>
/// <param name="LastRebuild">The last rebuild of this replica that its current owner finished; null if none since it opened the volume.</param>
public sealed record ReplicaResponse(string? Node, string Pool, string State, bool Owner, string? Reason, double? Progress = null,
    RebuildResponse? LastRebuild = null)
{
    public static IReadOnlyList<ReplicaResponse> From(string? node, string pool, ReplicaSet? set, IReadOnlyDictionary<string, double>? progress = null,
        IReadOnlyDictionary<string, RebuildReport>? lastRebuilds = null) => set is null
        ? [new ReplicaResponse(node, pool, nameof(ReplicaState.InSync), true, null)]
        : [.. set.Members.Select(m => new ReplicaResponse(m.Node, m.Pool, m.State.ToString(), m.Node == set.Owner, m.Reason,
            m.State == ReplicaState.Rebuilding && progress?.TryGetValue(m.Node, out double percent) == true ? Math.Round(percent, 1) : null,
            lastRebuilds?.TryGetValue(m.Node, out var last) == true ? RebuildResponse.From(last) : null))];
}

/// <summary>A finished rebuild: "full" or "delta", data bytes copied, bytes erased (trims and zeroings), seconds, and MB/s of data.</summary>
public sealed record RebuildResponse(string Kind, long DataBytes, long ErasedBytes, double Seconds, double MegabytesPerSecond, DateTimeOffset FinishedAt)
{
    public static RebuildResponse From(RebuildReport r) =>
        new(r.Kind, r.DataBytes, r.ErasedBytes, Math.Round(r.Seconds, 3), Math.Round(r.DataMegabytesPerSecond, 1), r.FinishedAt);
}

/// <summary>The controller's judgement of a volume: "Healthy" or "Unavailable", why, and since when. Null until it judged.</summary>
public sealed record VolumeHealthResponse(string State, string Reason, DateTimeOffset Since)
{
    public static VolumeHealthResponse? From(VolumeHealth? h) => h is null ? null : new(h.State.ToString(), h.Reason, h.Since);
}

/// <summary>A volume's replica count and spread, e.g. {"replicas": 3, "spread": "zone", "mode": "required"}.</summary>
public sealed record PlacementPolicyResponse(int Replicas, string Spread, string Mode)
{
    public static PlacementPolicyResponse From(PlacementPolicy p) =>
        new(p.Replicas, p.Spread.ToString().ToLowerInvariant(), p.Mode.ToString().ToLowerInvariant());
}

/// <summary>One node's verdict in a placement: "chosen", "not-chosen" or "excluded", with the reason.</summary>
public sealed record PlacementVerdictResponse(string Node, string Zone, string Rack, string? Pool, string Verdict, string Reason, int? Replica);

/// <summary>Where a volume would go (POST /api/v1/volumes?dryRun=true): the chosen replicas or the reason none fit, and every node's verdict.</summary>
public sealed record PlacementResponse(
    string Volume, long SizeBytes, string Size, PlacementPolicyResponse Policy, bool Placed, string? Reason,
    IReadOnlyList<ReplicaPlacement> Replicas, IReadOnlyList<PlacementVerdictResponse> Nodes)
{
    public static PlacementResponse From(PlacementDecision d) => new(
        d.Request.Volume, d.Request.SizeBytes, ByteSize.Format(d.Request.SizeBytes), PlacementPolicyResponse.From(d.Request.Policy), d.Succeeded, d.FailureReason,
        d.Replicas, [.. d.Verdicts.Select(v => new PlacementVerdictResponse(v.Node, v.Zone, v.Rack, v.Pool, VerdictName(v.Kind), v.Reason, v.Replica))]);

    private static string VerdictName(NodeVerdictKind kind) => kind switch
    {
        NodeVerdictKind.Chosen => "chosen",
        NodeVerdictKind.NotChosen => "not-chosen",
        _ => "excluded",
    };
}

public sealed record VolumeListResponse(IReadOnlyList<VolumeResponse> Volumes);

/// <summary>A pool on this node.</summary>
/// <param name="State">"Ok", or "Failed" when its drive failed and it refuses IO until cairnd restarts (<paramref name="Fault"/> says why).</param>
public sealed record PoolResponse(
    string Name,
    string Directory,
    long CapacityBytes,
    string Capacity,
    long UsedBytes,
    string Used,
    long FreeBytes,
    string Free,
    int Volumes,
    string State,
    string? Fault)
{
    public static PoolResponse From(PoolInfo p) => new(
        p.Name, p.Directory, p.CapacityBytes, ByteSize.Format(p.CapacityBytes), p.UsedBytes, ByteSize.Format(p.UsedBytes),
        p.FreeBytes, ByteSize.Format(p.FreeBytes), p.VolumeCount, p.Fault is null ? "Ok" : "Failed", p.Fault);
}

public sealed record PoolListResponse(IReadOnlyList<PoolResponse> Pools);

public sealed record HealthResponse(string Status);

public sealed record NodePoolResponse(string Name, long CapacityBytes, string Capacity, long UsedBytes, string Used, long FreeBytes, string Free)
{
    public static NodePoolResponse From(NodePool p) => new(
        p.Name, p.CapacityBytes, ByteSize.Format(p.CapacityBytes), p.UsedBytes, ByteSize.Format(p.UsedBytes), p.FreeBytes, ByteSize.Format(p.FreeBytes));
}

/// <summary>A node. <c>state</c> is Up, Down or Draining; <c>draining</c> is the admin's flag, kept while the node is Down.</summary>
/// <param name="LastHeartbeat">Null while the node is Down.</param>
public sealed record NodeResponse(
    string Name,
    string State,
    bool Draining,
    string? ApiAddress,
    string? NbdAddress,
    string Zone,
    string Rack,
    IReadOnlyList<NodePoolResponse> Pools,
    DateTimeOffset? StartedAt,
    DateTimeOffset? LastHeartbeat,
    DateTimeOffset RegisteredAt)
{
    public static NodeResponse From(NodeInfo n) => new(
        n.Name, n.State.ToString(), n.Draining, n.ApiAddress, n.NbdAddress, n.Zone, n.Rack, [.. n.Pools.Select(NodePoolResponse.From)],
        n.StartedAt, n.LastHeartbeat, n.RegisteredAt);
}

public sealed record NodeListResponse(IReadOnlyList<NodeResponse> Nodes);

/// <summary>PATCH /api/v1/nodes/{name}.</summary>
public sealed record UpdateNodeRequest(bool? Draining);

/// <summary>GET /api/v1/cluster: the store, this node, the elected controller (null while none) and node counts.</summary>
public sealed record ClusterResponse(string Store, string ThisNode, string? Leader, DateTimeOffset? LeaderSince, int NodesUp, int NodesDown, int NodesDraining)
{
    public static ClusterResponse From(ClusterStatus s) => new(s.Store, s.ThisNode, s.Leader, s.LeaderSince, s.NodesUp, s.NodesDown, s.NodesDraining);
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(CreateVolumeRequest))]
[JsonSerializable(typeof(UpdateVolumeRequest))]
[JsonSerializable(typeof(IscsiAccessRequest))]
[JsonSerializable(typeof(VolumeResponse))]
[JsonSerializable(typeof(VolumeListResponse))]
[JsonSerializable(typeof(PlacementResponse))]
[JsonSerializable(typeof(PoolListResponse))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(NodeResponse))]
[JsonSerializable(typeof(NodeListResponse))]
[JsonSerializable(typeof(UpdateNodeRequest))]
[JsonSerializable(typeof(ClusterResponse))]
[JsonSerializable(typeof(VolumeSourceRequest))]
[JsonSerializable(typeof(CreateSnapshotRequest))]
[JsonSerializable(typeof(RevertVolumeRequest))]
[JsonSerializable(typeof(SnapshotResponse))]
[JsonSerializable(typeof(SnapshotListResponse))]
[JsonSerializable(typeof(StartScrubRequest))]
[JsonSerializable(typeof(ScrubResponse))]
[JsonSerializable(typeof(HttpValidationProblemDetails))]
[JsonSerializable(typeof(Microsoft.AspNetCore.Mvc.ProblemDetails))]
public sealed partial class ApiJsonContext : JsonSerializerContext;

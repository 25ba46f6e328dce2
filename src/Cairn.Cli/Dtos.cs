using System.Text.Json;
using System.Text.Json.Serialization;

namespace Cairn.Cli;

// The CLI's own copies of the API's JSON shapes: it must not depend on the daemon's assemblies,
// so it can ship alone and talk to any cairnd that speaks /api/v1.

internal sealed record ClientDto(string Client, DateTimeOffset ConnectedAt);

internal sealed record VolumeDto(
    string Name,
    string Id,
    long SizeBytes,
    string Size,
    long AllocatedBytes,
    string Allocated,
    string Pool,
    DateTimeOffset CreatedAt,
    string? Export,
    IReadOnlyList<ClientDto>? Clients,
    bool Available,
    string? Node = null,
    IscsiDto? Iscsi = null,
    PlacementPolicyDto? Placement = null,
    VolumeHealthDto? Health = null,
    ulong? Epoch = null,
    IReadOnlyList<ReplicaDto>? Replicas = null);

internal sealed record VolumeHealthDto(string State, string Reason, DateTimeOffset Since);

/// <param name="Progress">Percent copied while Rebuilding.</param>
/// <param name="LastRebuild">The last rebuild of this replica its current owner finished, if any.</param>
internal sealed record ReplicaDto(string? Node, string Pool, string State, bool Owner, string? Reason, double? Progress = null,
    RebuildDto? LastRebuild = null);

/// <summary>A finished rebuild: "full" or "delta", data bytes copied, bytes erased, seconds, MB/s of data.</summary>
internal sealed record RebuildDto(string Kind, long DataBytes, long ErasedBytes, double Seconds, double MegabytesPerSecond, DateTimeOffset FinishedAt);

internal sealed record PlacementPolicyDto(int Replicas, string Spread, string Mode);

internal sealed record ReplicaPlacementDto(string Node, string Pool, string Zone, string Rack);

internal sealed record PlacementVerdictDto(string Node, string Zone, string Rack, string? Pool, string Verdict, string Reason, int? Replica);

internal sealed record PlacementDto(
    string Volume, string Size, PlacementPolicyDto Policy, bool Placed, string? Reason,
    IReadOnlyList<ReplicaPlacementDto> Replicas, IReadOnlyList<PlacementVerdictDto> Nodes);

internal sealed record IscsiDto(string Portal, string Target, int Lun, IscsiAccessDto? Access = null, IReadOnlyList<string>? Login = null);

internal sealed record IscsiAccessDto(IReadOnlyList<string>? AllowedInitiators, bool Chap, string? ChapUser, bool MutualChap, string? MutualChapUser);

internal sealed record ChapDto(string User, string Secret);

internal sealed record SetIscsiAccessDto(IReadOnlyList<string> AllowedInitiators, ChapDto? Chap, ChapDto? MutualChap);

internal sealed record VolumeListDto(IReadOnlyList<VolumeDto> Volumes);

internal sealed record PoolDto(
    string Name,
    string Directory,
    long CapacityBytes,
    string Capacity,
    long UsedBytes,
    string Used,
    long FreeBytes,
    string Free,
    int Volumes,
    string? State = null,
    string? Fault = null);

internal sealed record PoolListDto(IReadOnlyList<PoolDto> Pools);

internal sealed record NodePoolDto(string Name, long CapacityBytes, string Capacity, long UsedBytes, string Used, long FreeBytes, string Free);

internal sealed record NodeDto(
    string Name,
    string State,
    bool Draining,
    string? ApiAddress,
    string? NbdAddress,
    string Zone,
    string Rack,
    IReadOnlyList<NodePoolDto>? Pools,
    DateTimeOffset? StartedAt,
    DateTimeOffset? LastHeartbeat,
    DateTimeOffset RegisteredAt);

internal sealed record NodeListDto(IReadOnlyList<NodeDto> Nodes);

internal sealed record ClusterDto(string Store, string ThisNode, string? Leader, DateTimeOffset? LeaderSince, int NodesUp, int NodesDown, int NodesDraining);

internal sealed record ProblemDto(string? Title, string? Detail, int? Status, Dictionary<string, string[]>? Errors);

internal sealed record CreateVolumeDto(string Name, string Size, int? Replicas, string? Spread, string? Node, string? Pool);

internal sealed record GrowVolumeDto(string Size);

internal sealed record ReplicaCountDto(int Replicas);

internal sealed record DeletedDto(string Name, bool Deleted);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VolumeDto))]
[JsonSerializable(typeof(VolumeListDto))]
[JsonSerializable(typeof(PoolListDto))]
[JsonSerializable(typeof(ProblemDto))]
[JsonSerializable(typeof(NodeDto))]
[JsonSerializable(typeof(NodeListDto))]
[JsonSerializable(typeof(ClusterDto))]
[JsonSerializable(typeof(CreateVolumeDto))]
[JsonSerializable(typeof(PlacementDto))]
[JsonSerializable(typeof(GrowVolumeDto))]
[JsonSerializable(typeof(ReplicaCountDto))]
[JsonSerializable(typeof(SetIscsiAccessDto))]
[JsonSerializable(typeof(DeletedDto))]
[JsonSerializable(typeof(SnapshotDto))]
[JsonSerializable(typeof(SnapshotListDto))]
[JsonSerializable(typeof(CreateSnapshotDto))]
[JsonSerializable(typeof(CloneVolumeDto))]
[JsonSerializable(typeof(RevertVolumeDto))]
[JsonSerializable(typeof(StartScrubDto))]
[JsonSerializable(typeof(ScrubDto))]
internal sealed partial class CliJson : JsonSerializerContext;

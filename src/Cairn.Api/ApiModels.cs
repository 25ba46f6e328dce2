using System.Text.Json;
using System.Text.Json.Serialization;
using Cairn.ControlPlane;
using Cairn.Core;
using Microsoft.AspNetCore.Http;

namespace Cairn.Api;

/// <summary>POST /api/v1/volumes. <c>size</c> is a string with a unit ("10GiB", "512MiB") or a number of bytes.</summary>
public sealed record CreateVolumeRequest(string? Name, JsonElement? Size);

/// <summary>PATCH /api/v1/volumes/{name}: grows the volume to <c>size</c>.</summary>
public sealed record UpdateVolumeRequest(JsonElement? Size);

public sealed record ClientResponse(string Client, DateTimeOffset ConnectedAt);

/// <summary>A volume. Byte counts are numbers; the unsuffixed twins ("size", "allocated") are for people.</summary>
/// <param name="Export">Where to attach, e.g. nbd://127.0.0.1:10809/NAME; null while no frontend listens.</param>
/// <param name="Available">False when the volume's pool is not open on this node.</param>
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
    bool Available)
{
    public static VolumeResponse From(VolumeInfo v) => new(
        v.Name, v.Id, v.SizeBytes, ByteSize.Format(v.SizeBytes), v.AllocatedBytes, ByteSize.Format(v.AllocatedBytes), v.Pool, v.CreatedAt,
        v.ExportAddress, [.. v.Clients.Select(c => new ClientResponse(c.Client, c.ConnectedAt))], v.Available);
}

public sealed record VolumeListResponse(IReadOnlyList<VolumeResponse> Volumes);

public sealed record PoolResponse(
    string Name,
    string Directory,
    long CapacityBytes,
    string Capacity,
    long UsedBytes,
    string Used,
    long FreeBytes,
    string Free,
    int Volumes)
{
    public static PoolResponse From(PoolInfo p) => new(
        p.Name, p.Directory, p.CapacityBytes, ByteSize.Format(p.CapacityBytes), p.UsedBytes, ByteSize.Format(p.UsedBytes),
        p.FreeBytes, ByteSize.Format(p.FreeBytes), p.VolumeCount);
}

public sealed record PoolListResponse(IReadOnlyList<PoolResponse> Pools);

public sealed record HealthResponse(string Status);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(CreateVolumeRequest))]
[JsonSerializable(typeof(UpdateVolumeRequest))]
[JsonSerializable(typeof(VolumeResponse))]
[JsonSerializable(typeof(VolumeListResponse))]
[JsonSerializable(typeof(PoolListResponse))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(HttpValidationProblemDetails))]
[JsonSerializable(typeof(Microsoft.AspNetCore.Mvc.ProblemDetails))]
public sealed partial class ApiJsonContext : JsonSerializerContext;

using Cairn.ControlPlane;
using Cairn.Core;

namespace Cairn.Api;

/// <summary>The snapshot a new volume is cloned from: <c>{"volume": "db", "snapshot": "monday"}</c>.</summary>
public sealed record VolumeSourceRequest(string? Volume, string? Snapshot);

/// <summary>POST /api/v1/volumes/{name}/snapshots.</summary>
public sealed record CreateSnapshotRequest(string? Name);

/// <summary>POST /api/v1/volumes/{name}/revert: <c>force</c> disconnects connected clients first.</summary>
public sealed record RevertVolumeRequest(string? Snapshot, bool? Force);

/// <summary>A snapshot. <c>exclusiveBytes</c> is what deleting it frees; <c>sharedBytes</c> the rest of what it shows.</summary>
/// <param name="Export">Its read-only NBD export (nbd://HOST:PORT/VOLUME@SNAPSHOT); null while no frontend listens.</param>
public sealed record SnapshotResponse(
    string Volume,
    string Name,
    DateTimeOffset CreatedAt,
    long SizeBytes,
    string Size,
    long ReferencedBytes,
    long ExclusiveBytes,
    string Exclusive,
    long SharedBytes,
    string Shared,
    string? Export,
    IReadOnlyList<ClientResponse> Clients)
{
    public static SnapshotResponse From(SnapshotDetails s) => new(
        s.Volume, s.Name, s.CreatedAt, s.SizeBytes, ByteSize.Format(s.SizeBytes), s.ReferencedBytes, s.ExclusiveBytes, ByteSize.Format(s.ExclusiveBytes),
        s.SharedBytes, ByteSize.Format(s.SharedBytes), s.ExportAddress, [.. s.Clients.Select(c => new ClientResponse(c.Client, c.ConnectedAt))]);
}

public sealed record SnapshotListResponse(IReadOnlyList<SnapshotResponse> Snapshots);

/// <summary>POST /api/v1/volumes/{name}/scrub: <c>rate</c> paces the reads (bytes per second, "50MiB"); absent = unpaced.</summary>
public sealed record StartScrubRequest(System.Text.Json.JsonElement? Rate);

/// <summary>One bad block: the copy (device, on node), where, what was wrong, and <c>repair</c>: "repaired: ..." or "unrecoverable: ...".
/// <c>physicalBlock</c> is null for a replica's block (only its node knows it).</summary>
public sealed record ScrubErrorResponse(string Device, long OffsetBytes, long? PhysicalBlock, string Problem, string? Node, string? Repair);

/// <summary>A volume's scrub. <c>state</c> is Running, Finished or Failed; <c>errors</c> lists bad blocks (device, byte offset);
/// of <c>errorCount</c>, <c>repairedCount</c> were rewritten from a good copy and <c>unrecoverableCount</c> stay bad.</summary>
public sealed record ScrubResponse(string Volume, string State, long BlocksChecked, long BlocksTotal, long ErrorCount, long RepairedCount,
    long UnrecoverableCount, IReadOnlyList<ScrubErrorResponse> Errors, DateTimeOffset StartedAt, DateTimeOffset? FinishedAt, string? Failure)
{
    public static ScrubResponse From(ScrubStatus s) => new(s.Volume, s.State, s.BlocksChecked, s.BlocksTotal, s.ErrorCount, s.RepairedCount, s.UnrecoverableCount,
        [.. s.Errors.Select(e => new ScrubErrorResponse(e.Device, e.OffsetBytes, e.PhysicalBlock, e.Problem, e.Node, e.Repair))], s.StartedAt, s.FinishedAt, s.Failure);
}

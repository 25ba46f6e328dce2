using System.Text.Json;
using Cairn.ControlPlane;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;

namespace Cairn.Api;

// Snapshots, revert, clone (POST /api/v1/volumes with "source") and scrub, under /api/v1/volumes/{name}.
public static partial class CairnApi
{
    private static void MapSnapshots(RouteGroupBuilder all)
    {
        // Snapshots live with their volume's data: a request for a volume another node owns is passed to that node.
        var volumes = all.MapGroup("").AddEndpointFilter(VolumeEndpoints.AtOwnerFilter);
        var snapshots = volumes.MapGroup("/{name}/snapshots").WithTags("Snapshots");
        snapshots.MapGet("", ListSnapshots).WithName("ListSnapshots")
            .WithSummary("Lists a volume's snapshots, oldest first, with creation time, exclusive bytes (freed by deleting) and shared bytes.")
            .ProducesProblem(StatusCodes.Status404NotFound);
        snapshots.MapPost("", CreateSnapshot).WithName("CreateSnapshot")
            .WithSummary("Takes a crash-consistent, read-only snapshot in constant time while clients keep writing.")
            .Accepts<CreateSnapshotRequest>("application/json").ProducesProblem(StatusCodes.Status404NotFound).ProducesProblem(StatusCodes.Status409Conflict);
        snapshots.MapGet("/{snapshot}", GetSnapshot).WithName("GetSnapshot").WithSummary("Shows one snapshot.").ProducesProblem(StatusCodes.Status404NotFound);
        snapshots.MapDelete("/{snapshot}", DeleteSnapshot).WithName("DeleteSnapshot")
            .WithSummary("Deletes a snapshot (also one in the middle, or one clones came from); its space comes back in the background. Refused while clients read its export unless force=true.")
            .ProducesProblem(StatusCodes.Status404NotFound).ProducesProblem(StatusCodes.Status409Conflict);
        volumes.MapPost("/{name}/revert", RevertVolume).WithName("RevertVolume").WithTags("Snapshots")
            .WithSummary("Makes a volume's content a snapshot's again; refused while clients are connected unless force is true.")
            .Accepts<RevertVolumeRequest>("application/json").ProducesProblem(StatusCodes.Status404NotFound).ProducesProblem(StatusCodes.Status409Conflict);
        var scrub = volumes.MapGroup("/{name}/scrub").WithTags("Scrub");
        scrub.MapPost("", StartScrub).WithName("StartScrub")
            .WithSummary("Starts verifying every block of the volume and its snapshots against its checksum (or returns the scrub running).")
            .Accepts<StartScrubRequest>("application/json").ProducesProblem(StatusCodes.Status404NotFound);
        scrub.MapGet("", GetScrub).WithName("GetScrub").WithSummary("Progress of the running scrub, or the last result: blocks checked, errors and where.")
            .ProducesProblem(StatusCodes.Status404NotFound);
    }

    private static Ok<SnapshotListResponse> ListSnapshots(string name, VolumeService service) =>
        TypedResults.Ok(new SnapshotListResponse([.. service.ListSnapshots(name).Select(SnapshotResponse.From)]));

    private static async Task<Created<SnapshotResponse>> CreateSnapshot(string name, HttpRequest request, VolumeService service, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(name);
        var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.CreateSnapshotRequest, "{\"name\": \"before-upgrade\"}", cancellationToken);
        var snapshot = await service.CreateSnapshotAsync(name, body.Name, cancellationToken);
        return TypedResults.Created($"{VolumesPath}/{name}/snapshots/{snapshot.Name}", SnapshotResponse.From(snapshot));
    }

    private static Ok<SnapshotResponse> GetSnapshot(string name, string snapshot, VolumeService service) =>
        TypedResults.Ok(SnapshotResponse.From(service.GetSnapshot(name, snapshot)));

    private static async Task<NoContent> DeleteSnapshot(string name, string snapshot, string? force, VolumeService service, CancellationToken cancellationToken)
    {
        await service.DeleteSnapshotAsync(name, snapshot, ApiErrors.ParseBool("force", force), cancellationToken);
        return TypedResults.NoContent();
    }

    private static async Task<Ok<VolumeResponse>> RevertVolume(string name, HttpRequest request, VolumeService service, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(name);
        var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.RevertVolumeRequest, "{\"snapshot\": \"before-upgrade\", \"force\": false}", cancellationToken);
        var volume = await service.RevertAsync(name, body.Snapshot, body.Force ?? false, cancellationToken);
        return TypedResults.Ok(VolumeResponse.From(volume));
    }

    private static async Task<Accepted<ScrubResponse>> StartScrub(string name, HttpRequest request, VolumeService service, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(name);
        long rate = 0;
        if (request.ContentLength is > 0 || request.ContentType is not null) // a body is optional: POST with none = unpaced
        {
            var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.StartScrubRequest, "{\"rate\": \"50MiB\"}", cancellationToken);
            rate = body.Rate is { ValueKind: not (JsonValueKind.Undefined or JsonValueKind.Null) } ? ParseRate(body.Rate) : 0;
        }
        var status = service.StartScrub(name, rate);
        return TypedResults.Accepted($"{VolumesPath}/{name}/scrub", ScrubResponse.From(status));
    }

    private static Ok<ScrubResponse> GetScrub(string name, VolumeService service) => TypedResults.Ok(ScrubResponse.From(service.GetScrub(name)));

    /// <summary>A rate is a size per second; its errors name the "rate" field, not "size".</summary>
    private static long ParseRate(JsonElement? rate)
    {
        try
        {
            return ApiErrors.ParseSize(rate);
        }
        catch (CairnException e)
        {
            throw ApiErrors.Invalid("rate", $"rate (bytes per second): {e.Message}");
        }
    }
}

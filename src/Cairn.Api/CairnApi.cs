using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Cairn.ControlPlane;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Cairn.Api;

/// <summary>The REST surface over <see cref="VolumeService"/> and <see cref="ClusterService"/>: volumes, pools, nodes and the cluster under /api/v1.</summary>
public static class CairnApi
{
    public const string VolumesPath = "/api/v1/volumes";

    /// <summary>Registers JSON (source-generated), problem details and the OpenAPI document. The host registers <see cref="VolumeService"/> and <see cref="ClusterService"/>.</summary>
    public static IServiceCollection AddCairnApi(this IServiceCollection services)
    {
        services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, ApiJsonContext.Default));
        services.AddProblemDetails();
        services.AddOpenApi("v1");
        return services;
    }

    public static IEndpointRouteBuilder MapCairnApi(this IEndpointRouteBuilder app)
    {
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapGet("/healthz", () => TypedResults.Ok(new HealthResponse("ok"))).WithName("Health").WithSummary("Liveness: 200 while cairnd serves requests.");

        var api = app.MapGroup("/api/v1").AddEndpointFilter(ApiErrors.Filter).ProducesProblem(StatusCodes.Status400BadRequest);
        var volumes = api.MapGroup("/volumes").WithTags("Volumes");
        volumes.MapGet("", ListVolumes).WithName("ListVolumes").WithSummary("Lists volumes.");
        volumes.MapPost("", CreateVolume).WithName("CreateVolume").WithSummary("Creates a thin volume.")
            .Accepts<CreateVolumeRequest>("application/json").ProducesProblem(StatusCodes.Status409Conflict);
        volumes.MapGet("/{name}", GetVolume).WithName("GetVolume").WithSummary("Shows a volume: size, allocation, export address, clients.")
            .ProducesProblem(StatusCodes.Status404NotFound);
        volumes.MapPatch("/{name}", UpdateVolume).WithName("UpdateVolume").WithSummary("Grows a volume (volumes never shrink).")
            .Accepts<UpdateVolumeRequest>("application/json").ProducesProblem(StatusCodes.Status404NotFound).ProducesProblem(StatusCodes.Status409Conflict);
        volumes.MapPut("/{name}/iscsi-access", SetIscsiAccess).WithName("SetIscsiAccess").Accepts<IscsiAccessRequest>("application/json")
            .WithSummary("Replaces who may log in over iSCSI: allowed initiator names, CHAP and mutual CHAP. Secrets are never returned.")
            .ProducesProblem(StatusCodes.Status400BadRequest).ProducesProblem(StatusCodes.Status404NotFound);
        volumes.MapDelete("/{name}", DeleteVolume).WithName("DeleteVolume")
            .WithSummary("Deletes a volume; refused while clients are connected unless force=true, which disconnects them.")
            .ProducesProblem(StatusCodes.Status404NotFound).ProducesProblem(StatusCodes.Status409Conflict);
        api.MapGroup("/pools").WithTags("Pools").MapGet("", ListPools).WithName("ListPools").WithSummary("Lists pools with capacity, used and free bytes.");

        var nodes = api.MapGroup("/nodes").WithTags("Nodes").ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        nodes.MapGet("", ListNodes).WithName("ListNodes").WithSummary("Lists the cluster's nodes: state (Up, Down, Draining), domains, addresses, pools.");
        nodes.MapGet("/{name}", GetNode).WithName("GetNode").WithSummary("Shows one node.").ProducesProblem(StatusCodes.Status404NotFound);
        nodes.MapPatch("/{name}", UpdateNode).WithName("UpdateNode").WithSummary("Sets or clears a node's Draining flag: {\"draining\": true}.")
            .Accepts<UpdateNodeRequest>("application/json").ProducesProblem(StatusCodes.Status404NotFound);
        nodes.MapPost("/{name}/drain", (string name, ClusterService cluster, CancellationToken ct) => SetDraining(name, true, cluster, ct))
            .WithName("DrainNode").WithSummary("Marks a node Draining: it takes no new work.").ProducesProblem(StatusCodes.Status404NotFound);
        nodes.MapPost("/{name}/undrain", (string name, ClusterService cluster, CancellationToken ct) => SetDraining(name, false, cluster, ct))
            .WithName("UndrainNode").WithSummary("Clears a node's Draining flag.").ProducesProblem(StatusCodes.Status404NotFound);
        api.MapGet("/cluster", GetCluster).WithTags("Cluster").WithName("GetCluster")
            .WithSummary("The cluster store kind, this node, the elected controller and node counts.").ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        return app;
    }

    private static Ok<VolumeListResponse> ListVolumes(VolumeService service) =>
        TypedResults.Ok(new VolumeListResponse([.. service.List().Select(VolumeResponse.From)]));

    private static async Task<Results<Created<VolumeResponse>, ProblemHttpResult>> CreateVolume(HttpRequest request, VolumeService service, CancellationToken cancellationToken)
    {
        var body = await ReadBodyAsync(request, ApiJsonContext.Default.CreateVolumeRequest, "{\"name\": \"vol1\", \"size\": \"10GiB\"}", cancellationToken);
        VolumeNames.Validate(body.Name);
        var volume = await service.CreateAsync(body.Name, ApiErrors.ParseSize(body.Size), cancellationToken);
        return TypedResults.Created($"{VolumesPath}/{volume.Name}", VolumeResponse.From(volume));
    }

    private static Ok<VolumeResponse> GetVolume(string name, VolumeService service) =>
        TypedResults.Ok(VolumeResponse.From(service.Get(name)));

    private static async Task<Ok<VolumeResponse>> UpdateVolume(string name, HttpRequest request, VolumeService service, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(name);
        var body = await ReadBodyAsync(request, ApiJsonContext.Default.UpdateVolumeRequest, "{\"size\": \"20GiB\"}", cancellationToken);
        var volume = await service.GrowAsync(name, ApiErrors.ParseSize(body.Size), cancellationToken);
        return TypedResults.Ok(VolumeResponse.From(volume));
    }

    private static async Task<Ok<VolumeResponse>> SetIscsiAccess(string name, HttpRequest request, VolumeService service, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(name);
        var body = await ReadBodyAsync(request, ApiJsonContext.Default.IscsiAccessRequest,
            "{\"allowedInitiators\": [\"iqn.1993-08.org.debian:01:host\"], \"chap\": {\"user\": \"u\", \"secret\": \"12-16 bytes\"}}", cancellationToken);
        var volume = await service.SetIscsiAccessAsync(name, body.ToAccess(), cancellationToken);
        return TypedResults.Ok(VolumeResponse.From(volume));
    }

    private static async Task<NoContent> DeleteVolume(string name, string? force, VolumeService service, CancellationToken cancellationToken)
    {
        await service.DeleteAsync(name, ApiErrors.ParseForce(force), cancellationToken);
        return TypedResults.NoContent();
    }

    private static Ok<PoolListResponse> ListPools(VolumeService service) =>
        TypedResults.Ok(new PoolListResponse([.. service.ListPools().Select(PoolResponse.From)]));

    private static async Task<Ok<NodeListResponse>> ListNodes(ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(new NodeListResponse([.. (await cluster.ListNodesAsync(cancellationToken)).Select(NodeResponse.From)]));

    private static async Task<Ok<NodeResponse>> GetNode(string name, ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(NodeResponse.From(await cluster.GetNodeAsync(name, cancellationToken)));

    private static async Task<Ok<NodeResponse>> UpdateNode(string name, HttpRequest request, ClusterService cluster, CancellationToken cancellationToken)
    {
        NodeNames.Validate(name);
        var body = await ReadBodyAsync(request, ApiJsonContext.Default.UpdateNodeRequest, "{\"draining\": true}", cancellationToken);
        bool draining = body.Draining ?? throw ApiErrors.Invalid("draining", "draining is required: true to drain the node, false to undrain it");
        return await SetDraining(name, draining, cluster, cancellationToken);
    }

    private static async Task<Ok<NodeResponse>> SetDraining(string name, bool draining, ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(NodeResponse.From(await cluster.SetDrainingAsync(name, draining, cancellationToken)));

    private static async Task<Ok<ClusterResponse>> GetCluster(ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(ClusterResponse.From(await cluster.StatusAsync(cancellationToken)));

    /// <summary>
    /// Reads the JSON body ourselves rather than through parameter binding, so a malformed body gets a
    /// problem naming what is wrong (and where) instead of an empty 400.
    /// </summary>
    private static async Task<T> ReadBodyAsync<T>(HttpRequest request, JsonTypeInfo<T> typeInfo, string example, CancellationToken cancellationToken)
        where T : class
    {
        try
        {
            var body = await JsonSerializer.DeserializeAsync(request.Body, typeInfo, cancellationToken);
            return body ?? throw ApiErrors.Invalid("body", $"the request body is JSON null; send an object like {example}");
        }
        catch (JsonException e)
        {
            string field = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : "body";
            string reason = e.Message.Contains("The input does not contain any JSON tokens", StringComparison.Ordinal)
                ? $"the request body is empty; send JSON like {example}"
                : $"the request body is not valid JSON: {e.Message}";
            throw ApiErrors.Invalid(field, reason);
        }
    }
}

using System.Text.Json;
using Cairn.ControlPlane;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Cairn.Api;

/// <summary>The REST surface over <see cref="VolumeService"/> and <see cref="ClusterService"/>: volumes, pools, nodes and the cluster under /api/v1.</summary>
public static partial class CairnApi
{
    public const string VolumesPath = "/api/v1/volumes";

    /// <summary>Registers JSON (source-generated), problem details and the OpenAPI document. The host registers <see cref="VolumeService"/> and <see cref="ClusterService"/>.</summary>
    public static IServiceCollection AddCairnApi(this IServiceCollection services)
    {
        services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, ApiJsonContext.Default));
        services.AddProblemDetails();
        services.AddOpenApi("v1");
        services.AddSingleton(_ => new NodeForwarder(new HttpClient { Timeout = System.Threading.Timeout.InfiniteTimeSpan }));
        return services;
    }

    public static IEndpointRouteBuilder MapCairnApi(this IEndpointRouteBuilder app)
    {
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapGet("/healthz", () => TypedResults.Ok(new HealthResponse("ok"))).WithName("Health").WithSummary("Liveness: 200 while cairnd serves requests.");

        var api = app.MapGroup("/api/v1").AddEndpointFilter(ApiErrors.Filter).ProducesProblem(StatusCodes.Status400BadRequest);
        var volumes = api.MapGroup("/volumes").WithTags("Volumes");
        volumes.MapGet("", VolumeEndpoints.ListAsync).WithName("ListVolumes")
            .WithSummary("Lists the volumes of every node (scope=local: only this node's).").Produces<VolumeListResponse>();
        volumes.MapPost("", VolumeEndpoints.CreateAsync).WithName("CreateVolume")
            .WithSummary("Creates a thin volume on the node placement chooses; dryRun=true only shows the placement and why.")
            .Accepts<CreateVolumeRequest>("application/json").Produces<VolumeResponse>(StatusCodes.Status201Created).Produces<PlacementResponse>()
            .ProducesProblem(StatusCodes.Status409Conflict).ProducesProblem(StatusCodes.Status503ServiceUnavailable);
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
        MapSnapshots(volumes);
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

    private static Task<IResult> GetVolume(string name, HttpRequest request, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken) =>
        VolumeEndpoints.AtOwnerAsync(name, request, service, cluster, view, forwarder,
            () => Task.FromResult<IResult>(TypedResults.Ok(VolumeEndpoints.WithHealth(VolumeResponse.From(service.Get(name)), view))), cancellationToken);

    private static Task<IResult> UpdateVolume(string name, HttpRequest request, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken) =>
        VolumeEndpoints.AtOwnerAsync(name, request, service, cluster, view, forwarder, async () =>
        {
            var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.UpdateVolumeRequest, "{\"size\": \"20GiB\"} or {\"replicas\": 3}", cancellationToken);
            if (body.Size is null or { ValueKind: JsonValueKind.Null } && body.Replicas is null)
            {
                throw ApiErrors.Invalid("size", "size is required to grow the volume (or give replicas to change its replica count)");
            }
            VolumeInfo? volume = null;
            if (body.Size is { ValueKind: not JsonValueKind.Null })
            {
                volume = await service.GrowAsync(name, ApiErrors.ParseSize(body.Size), cancellationToken);
            }
            if (body.Replicas is { } replicas)
            {
                volume = await service.SetReplicaCountAsync(name, replicas, cancellationToken);
            }
            return TypedResults.Ok(VolumeResponse.From(volume!));
        }, cancellationToken);

    private static Task<IResult> SetIscsiAccess(string name, HttpRequest request, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken) =>
        VolumeEndpoints.AtOwnerAsync(name, request, service, cluster, view, forwarder, async () =>
        {
            var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.IscsiAccessRequest,
                "{\"allowedInitiators\": [\"iqn.1993-08.org.debian:01:host\"], \"chap\": {\"user\": \"u\", \"secret\": \"12-16 bytes\"}}", cancellationToken);
            var volume = await service.SetIscsiAccessAsync(name, body.ToAccess(), cancellationToken);
            return TypedResults.Ok(VolumeResponse.From(volume));
        }, cancellationToken);

    private static Task<IResult> DeleteVolume(string name, string? force, HttpRequest request, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken) =>
        VolumeEndpoints.AtOwnerAsync(name, request, service, cluster, view, forwarder, async () =>
        {
            await service.DeleteAsync(name, ApiErrors.ParseBool("force", force), cancellationToken);
            return TypedResults.NoContent();
        }, cancellationToken);

    private static Ok<PoolListResponse> ListPools(VolumeService service) =>
        TypedResults.Ok(new PoolListResponse([.. service.ListPools().Select(PoolResponse.From)]));

    private static async Task<Ok<NodeListResponse>> ListNodes(ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(new NodeListResponse([.. (await cluster.ListNodesAsync(cancellationToken)).Select(NodeResponse.From)]));

    private static async Task<Ok<NodeResponse>> GetNode(string name, ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(NodeResponse.From(await cluster.GetNodeAsync(name, cancellationToken)));

    private static async Task<Ok<NodeResponse>> UpdateNode(string name, HttpRequest request, ClusterService cluster, CancellationToken cancellationToken)
    {
        NodeNames.Validate(name);
        var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.UpdateNodeRequest, "{\"draining\": true}", cancellationToken);
        bool draining = body.Draining ?? throw ApiErrors.Invalid("draining", "draining is required: true to drain the node, false to undrain it");
        return await SetDraining(name, draining, cluster, cancellationToken);
    }

    private static async Task<Ok<NodeResponse>> SetDraining(string name, bool draining, ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(NodeResponse.From(await cluster.SetDrainingAsync(name, draining, cancellationToken)));

    private static async Task<Ok<ClusterResponse>> GetCluster(ClusterService cluster, CancellationToken cancellationToken) =>
        TypedResults.Ok(ClusterResponse.From(await cluster.StatusAsync(cancellationToken)));
}

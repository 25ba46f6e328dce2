using System.Net.Http.Json;
using System.Text.Json;
using Cairn.ControlPlane;
using Cairn.ControlPlane.Placement;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Cairn.Api;

/// <summary>
/// Volume requests, cluster-wide: any node answers for every volume. A create runs placement on this node's
/// <see cref="ClusterView"/> and is created here or passed to the chosen node; a request for a volume another node
/// owns is passed to that node (<see cref="NodeForwarder"/>); a list gathers every owner's volumes.
/// </summary>
internal static class VolumeEndpoints
{
    /// <summary>How long a call waits for the view to show the store's latest state, or a new volume, before going on.</summary>
    private static readonly TimeSpan ViewWait = TimeSpan.FromSeconds(5);

    public static async Task<IResult> CreateAsync(HttpRequest request, string? dryRun, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken)
    {
        var body = await ApiBodies.ReadAsync(request, ApiJsonContext.Default.CreateVolumeRequest, "{\"name\": \"vol1\", \"size\": \"10GiB\"}", cancellationToken);
        VolumeNames.Validate(body.Name);
        if (body.Source is { } source)
        {
            return await CloneAsync(request, body, source, service, cluster, view, forwarder, cancellationToken);
        }
        long size = ApiErrors.ParseSize(body.Size);
        var policy = PolicyOf(body);
        if (body.Node is not null && !NodeNames.TryValidate(body.Node, out string nodeError))
        {
            throw ApiErrors.Invalid("node", nodeError);
        }
        if (body.Pool is not null && body.Node is null)
        {
            throw ApiErrors.Invalid("pool", "pool names a pool on one node: give node as well, or leave both to placement");
        }
        bool isDryRun = ApiErrors.ParseBool("dryRun", dryRun);

        await view.CatchUpAsync(ViewWait, cancellationToken); // so placement sees this caller's own earlier drains and creates
        if (view.FindVolume(body.Name) is { } existing)
        {
            throw new CairnException(CairnErrorCode.AlreadyExists, $"a volume named '{body.Name}' already exists (on node {existing.Node ?? cluster.ThisNode}); pick another name", "name");
        }
        var decision = Placer.Place(new PlacementRequest(body.Name, size, policy, PinnedNode: body.Node), view.PlacementCandidates());
        if (isDryRun)
        {
            return TypedResults.Ok(PlacementResponse.From(decision));
        }
        var placed = body.PlacedOn is { } placedOn && NodeForwarder.IsForwarded(request)
            ? ParsePlacedOn(placedOn)
            : decision.ThrowIfFailed().Replicas.Select(r => new ReplicaPlacement(r.Node, r.Pool, r.Zone, r.Rack)).ToList();
        if (placed.Count > 1 && !service.ReplicationEnabled && placed[0].Node == cluster.ThisNode)
        {
            throw ApiErrors.Invalid("replicas", "this node runs alone on an embedded store, so a volume has one copy; start the nodes with --cluster etcd://... to replicate");
        }
        var target = placed[0];
        string pool = body.Pool ?? target.Pool;
        if (target.Node == cluster.ThisNode)
        {
            var volume = await service.CreateAsync(body.Name, size, pool, policy, placed, cancellationToken);
            await view.WaitUntilAsync(() => view.FindVolume(body.Name) is not null, ViewWait, cancellationToken);
            return TypedResults.Created($"{CairnApi.VolumesPath}/{volume.Name}", VolumeResponse.From(volume));
        }
        if (NodeForwarder.IsForwarded(request))
        {
            throw new CairnException(CairnErrorCode.Busy,
                $"node '{cluster.ThisNode}' was asked to create '{body.Name}' but places it on '{target.Node}' (the nodes' views of the cluster differ for a moment); retry");
        }
        var owner = view.FindLiveNode(target.Node) ?? throw NodeDown(target.Node, body.Name);
        var forward = new CreateVolumeRequest(body.Name, JsonSerializer.SerializeToElement(size), policy.Replicas, SpreadText(policy), target.Node, pool,
            PlacedOn: [.. placed.Select(r => $"{r.Node}/{r.Pool}")]);
        var result = await forwarder.ForwardAsync(owner, cluster.ThisNode, HttpMethod.Post, CairnApi.VolumesPath,
            JsonSerializer.SerializeToUtf8Bytes(forward, ApiJsonContext.Default.CreateVolumeRequest), cancellationToken);
        if (result.StatusCode == StatusCodes.Status201Created)
        {
            await view.WaitUntilAsync(() => view.FindVolume(body.Name) is not null, ViewWait, cancellationToken); // the next placement sees it
        }
        return result;
    }

    private static List<ReplicaPlacement> ParsePlacedOn(IReadOnlyList<string> placedOn)
    {
        var placed = new List<ReplicaPlacement>();
        foreach (string entry in placedOn)
        {
            int slash = entry.IndexOf('/', StringComparison.Ordinal);
            if (slash <= 0 || slash == entry.Length - 1)
            {
                throw ApiErrors.Invalid("placedOn", $"'{entry}' is not NODE/POOL");
            }
            placed.Add(new ReplicaPlacement(entry[..slash], entry[(slash + 1)..], "", ""));
        }
        return placed.Count > 0 ? placed : throw ApiErrors.Invalid("placedOn", "names no copy");
    }

    /// <summary>
    /// A clone shares its source snapshot's blocks, so it is made on the node that owns the source volume: here, or
    /// passed to that node. Placement does not run for it.
    /// </summary>
    private static async Task<IResult> CloneAsync(HttpRequest request, CreateVolumeRequest body, VolumeSourceRequest source, VolumeService service,
        ClusterService cluster, ClusterView view, NodeForwarder forwarder, CancellationToken cancellationToken)
    {
        if (body.Node is not null || body.Pool is not null || body.Replicas is not null || body.Spread is not null)
        {
            throw ApiErrors.Invalid("source", "a clone lives beside its source snapshot: leave node, pool, replicas and spread out");
        }
        if (source.Volume is { } sourceVolume && VolumeNames.TryValidate(sourceVolume, "volume name", out _) && !service.Owns(sourceVolume)
            && !NodeForwarder.IsForwarded(request))
        {
            await view.CatchUpAsync(ViewWait, cancellationToken);
            if (view.FindVolume(sourceVolume) is { Node: { } node } && node != cluster.ThisNode)
            {
                var owner = view.FindLiveNode(node) ?? throw NodeDown(node, sourceVolume);
                return await forwarder.ForwardAsync(owner, cluster.ThisNode, HttpMethod.Post, CairnApi.VolumesPath,
                    JsonSerializer.SerializeToUtf8Bytes(body, ApiJsonContext.Default.CreateVolumeRequest), cancellationToken);
            }
        }
        long? bytes = body.Size is { ValueKind: not (JsonValueKind.Undefined or JsonValueKind.Null) } ? ApiErrors.ParseSize(body.Size) : null;
        var volume = await service.CloneAsync(body.Name!, source.Volume, source.Snapshot, bytes, cancellationToken);
        await view.WaitUntilAsync(() => view.FindVolume(volume.Name) is not null, ViewWait, cancellationToken);
        return TypedResults.Created($"{CairnApi.VolumesPath}/{volume.Name}", VolumeResponse.From(volume));
    }

    /// <summary>This node's volumes, plus, unless <paramref name="scope"/> is "local", every other owner's (asked in parallel).</summary>
    public static async Task<IResult> ListAsync(HttpRequest request, string? scope, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken)
    {
        var local = service.List().Select(VolumeResponse.From).ToList();
        if (scope is "local" || NodeForwarder.IsForwarded(request))
        {
            return TypedResults.Ok(new VolumeListResponse(local));
        }
        if (scope is not (null or "" or "cluster"))
        {
            throw ApiErrors.Invalid("scope", $"scope must be 'cluster' (every node's volumes, the default) or 'local' (this node's), not '{scope}'");
        }
        var remote = view.Volumes().Where(v => v.Node is { } node && node != cluster.ThisNode).GroupBy(v => v.Node!);
        var fetched = await Task.WhenAll(remote.Select(g => FetchOwnerAsync(g.Key, [.. g], cluster.ThisNode, view, forwarder, cancellationToken)));
        var all = local.Concat(fetched.SelectMany(f => f)).Select(v => WithHealth(v, view)).OrderBy(v => v.Name, StringComparer.Ordinal).ToList();
        return TypedResults.Ok(new VolumeListResponse(all));
    }

    /// <summary>Asks an owner for its volumes; an owner that is Down or does not answer lists its volumes from their specs, marked unavailable.</summary>
    private static async Task<IEnumerable<VolumeResponse>> FetchOwnerAsync(string node, List<VolumeSpec> specs, string thisNode, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken)
    {
        if (view.FindLiveNode(node) is { } owner)
        {
            try
            {
                using var response = await forwarder.SendAsync(owner, thisNode, HttpMethod.Get, $"{CairnApi.VolumesPath}?scope=local", null, cancellationToken);
                if (response.IsSuccessStatusCode)
                {
                    var list = await response.Content.ReadFromJsonAsync(ApiJsonContext.Default.VolumeListResponse, cancellationToken);
                    var names = specs.Select(s => s.Name).ToHashSet(StringComparer.Ordinal);
                    return list?.Volumes.Where(v => names.Contains(v.Name)) ?? [];
                }
            }
            catch (CairnException)
            {
                // Unreachable: fall through to the specs.
            }
        }
        return specs.Select(s => VolumeResponse.From(new VolumeInfo(s.Name, s.Id, s.SizeBytes, 0, s.Pool, s.CreatedAt, null, [], Available: false, s.Node,
            Placement: s.Placement)));
    }

    /// <summary>Runs <paramref name="local"/> when this node owns the volume; else passes the request to the owner.</summary>
    public static async Task<IResult> AtOwnerAsync(string name, HttpRequest request, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, Func<Task<IResult>> local, CancellationToken cancellationToken) =>
        await ForwardIfRemoteAsync(name, request, service, cluster, view, forwarder, cancellationToken) ?? await local();

    /// <summary>The same as <see cref="AtOwnerAsync"/> for a whole route group whose routes carry the volume as {name}.</summary>
    public static async ValueTask<object?> AtOwnerFilter(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.GetRouteValue("name") is string name && VolumeNames.TryValidate(name, "volume name", out _))
        {
            var services = http.RequestServices;
            var forwarded = await ForwardIfRemoteAsync(name, http.Request, services.GetRequiredService<VolumeService>(), services.GetRequiredService<ClusterService>(),
                services.GetRequiredService<ClusterView>(), services.GetRequiredService<NodeForwarder>(), http.RequestAborted);
            if (forwarded is not null)
            {
                return forwarded;
            }
        }
        return await next(context);
    }

    /// <summary>Passes the request to the volume's owner and returns its answer, or null when this node should answer (it owns the volume, or nobody does).</summary>
    private static async Task<IResult?> ForwardIfRemoteAsync(string name, HttpRequest request, VolumeService service, ClusterService cluster, ClusterView view,
        NodeForwarder forwarder, CancellationToken cancellationToken)
    {
        VolumeNames.Validate(name);
        if (service.Owns(name) || NodeForwarder.IsForwarded(request))
        {
            return null;
        }
        await view.CatchUpAsync(ViewWait, cancellationToken);
        if (view.FindVolume(name) is not { Node: { } node } || node == cluster.ThisNode)
        {
            return null; // unknown here too: the local service gives the 404
        }
        var owner = view.FindLiveNode(node) ?? throw NodeDown(node, name);
        using var copy = new MemoryStream();
        await request.Body.CopyToAsync(copy, cancellationToken);
        byte[]? body = copy.Length == 0 ? null : copy.ToArray();
        return await forwarder.ForwardAsync(owner, cluster.ThisNode, new HttpMethod(request.Method), request.Path + request.QueryString, body, cancellationToken);
    }

    /// <summary>Adds the controller's judgement, which lives in the cluster store rather than on the owner.</summary>
    public static VolumeResponse WithHealth(VolumeResponse volume, ClusterView view) =>
        volume with { Health = VolumeHealthResponse.From(view.FindHealth(volume.Name)) };

    private static PlacementPolicy PolicyOf(CreateVolumeRequest body)
    {
        int replicas = body.Replicas ?? 1;
        PlacementPolicy.ValidateReplicas(replicas);
        var (level, mode) = PlacementPolicy.ParseSpread(body.Spread);
        return new PlacementPolicy(replicas, level, mode);
    }

    private static string SpreadText(PlacementPolicy policy) => $"{policy.Spread}:{policy.Mode}".ToLowerInvariant();

    private static CairnException NodeDown(string node, string volume) =>
        new(CairnErrorCode.Unavailable, $"volume '{volume}' lives on node '{node}', which is Down; its data is unavailable until the node is back");
}

using System.Text.Json;
using Cairn.ClusterStore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

/// <summary>
/// The cluster as any node sees it, read from the cluster store: nodes (registration merged with live record) and the
/// elected controller. Every answer comes from the store, so every node gives the same one.
/// Store outages surface as <see cref="ClusterStoreUnavailableException"/>, which the API turns into 503.
/// </summary>
public sealed class ClusterService(IClusterStore store, string thisNode, string storeKind, ILogger<ClusterService>? logger = null)
{
    private readonly ILogger _logger = (ILogger?)logger ?? NullLogger.Instance;

    public string ThisNode { get; } = thisNode;

    /// <summary>"embedded" or "etcd".</summary>
    public string StoreKind { get; } = storeKind;

    public async Task<IReadOnlyList<NodeInfo>> ListNodesAsync(CancellationToken cancellationToken = default)
    {
        var registry = await store.RangeAsync(ClusterKeys.NodeRegistry, cancellationToken);
        var live = await store.RangeAsync(ClusterKeys.Nodes, cancellationToken);
        var records = new Dictionary<string, NodeRecord>(StringComparer.Ordinal);
        foreach (var kv in live.Items)
        {
            if (Read(kv, ClusterJson.Default.NodeRecord) is { } record)
            {
                records[record.Name] = record;
            }
        }
        var nodes = new List<NodeInfo>();
        foreach (var kv in registry.Items)
        {
            if (ReadRegistration(kv, _logger) is { } registration)
            {
                nodes.Add(Merge(registration, records.GetValueOrDefault(registration.Name)));
            }
        }
        return [.. nodes.OrderBy(n => n.Name, StringComparer.Ordinal)];
    }

    public async Task<NodeInfo> GetNodeAsync(string? name, CancellationToken cancellationToken = default)
    {
        NodeNames.Validate(name);
        var kv = await store.GetAsync(ClusterKeys.Registration(name), cancellationToken);
        var registration = kv is null ? null : ReadRegistration(kv, _logger);
        if (registration is null)
        {
            throw NotFound(name);
        }
        var live = await store.GetAsync(ClusterKeys.Node(name), cancellationToken);
        return Merge(registration, live is null ? null : Read(live, ClusterJson.Default.NodeRecord));
    }

    /// <summary>Sets or clears the admin's Draining flag; compare-and-swap on the registration so a node restarting at the same time keeps it.</summary>
    public async Task<NodeInfo> SetDrainingAsync(string? name, bool draining, CancellationToken cancellationToken = default)
    {
        NodeNames.Validate(name);
        string key = ClusterKeys.Registration(name);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            var kv = await store.GetAsync(key, cancellationToken);
            var registration = (kv is null ? null : ReadRegistration(kv, _logger)) ?? throw NotFound(name);
            if (registration.Draining != draining)
            {
                var bytes = JsonSerializer.SerializeToUtf8Bytes(registration with { Draining = draining }, ClusterJson.Default.NodeRegistration);
                var result = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs(key, kv!.ModRevision)).Then(TxnOp.Put(key, bytes)), cancellationToken);
                if (!result.Succeeded)
                {
                    continue;
                }
                _logger.LogInformation("node {Node} is {Action}", name, draining ? "draining: it takes no new volumes" : "no longer draining");
            }
            return await GetNodeAsync(name, cancellationToken);
        }
        throw new CairnException(CairnErrorCode.Busy, $"node '{name}' kept changing while its Draining flag was being set; retry");
    }

    /// <summary>Whether the admin has drained <paramref name="name"/>; false for a node that never registered.</summary>
    public async Task<bool> IsDrainingAsync(string name, CancellationToken cancellationToken = default)
    {
        var kv = await store.GetAsync(ClusterKeys.Registration(name), cancellationToken);
        return kv is not null && ReadRegistration(kv, _logger)?.Draining == true;
    }

    public async Task<ClusterStatus> StatusAsync(CancellationToken cancellationToken = default)
    {
        var leader = await GetLeaderAsync(store, cancellationToken);
        var nodes = await ListNodesAsync(cancellationToken);
        return new ClusterStatus(StoreKind, ThisNode, leader?.Node, leader?.ElectedAt,
            nodes.Count(n => n.State == NodeState.Up), nodes.Count(n => n.State == NodeState.Down), nodes.Count(n => n.State == NodeState.Draining));
    }

    /// <summary>The elected controller as the store says now, or null while there is none.</summary>
    public static async Task<LeaderRecord?> GetLeaderAsync(IClusterStore store, CancellationToken cancellationToken = default)
    {
        var kv = await store.GetAsync(ClusterKeys.ControllerLeader, cancellationToken);
        return kv is null ? null : Read(kv, ClusterJson.Default.LeaderRecord);
    }

    /// <summary>
    /// A node's current boot (<see cref="NodeRecord.Boot"/>) as the store says now, or null while it is Down. Read from
    /// the store, not a view: a node writes its record before its replica service takes any volume, so once one of its
    /// replicas has answered, this read cannot return an earlier boot than the one that answered.
    /// </summary>
    public static async Task<string?> GetBootAsync(IClusterStore store, string node, CancellationToken cancellationToken = default)
    {
        var kv = await store.GetAsync(ClusterKeys.Node(node), cancellationToken);
        return kv is null ? null : Read(kv, ClusterJson.Default.NodeRecord)?.Boot;
    }

    private static NodeInfo Merge(NodeRegistration registration, NodeRecord? live)
    {
        var state = live is null ? NodeState.Down : registration.Draining ? NodeState.Draining : NodeState.Up;
        return live is null
            ? new NodeInfo(registration.Name, state, registration.Draining, registration.ApiAddress, registration.NbdAddress, registration.Zone, registration.Rack,
                registration.Pools, null, null, registration.RegisteredAt)
            : new NodeInfo(registration.Name, state, registration.Draining, live.ApiAddress, live.NbdAddress, live.Zone, live.Rack,
                live.Pools, live.StartedAt, live.HeartbeatAt, registration.RegisteredAt);
    }

    internal static NodeRegistration? ReadRegistration(KeyValue kv, ILogger logger)
    {
        var registration = Read(kv, ClusterJson.Default.NodeRegistration);
        if (registration is null)
        {
            logger.LogError("ignoring unreadable node registration at {Key}", kv.Key);
        }
        return registration;
    }

    private static T? Read<T>(KeyValue kv, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize(kv.Value, type);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static CairnException NotFound(string name) =>
        new(CairnErrorCode.NotFound, $"no node named '{name}' has joined this cluster", "name");
}

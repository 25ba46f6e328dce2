using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace Cairn.Integration.Tests.Faults;

/// <summary>The REST calls the fault tests make against a <see cref="NetnsCluster"/>'s nodes, with deadlines that suit a partitioned cluster.</summary>
internal sealed class ClusterApi(NetnsCluster cluster) : IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(15) };

    /// <summary>
    /// How long one question asked in a polling loop may take. A node whose view still names a partitioned owner passes
    /// the question on to it and waits (up to its forwarding timeout); the loop should ask again, or ask another node,
    /// rather than wait that out. The loops' own deadlines stay generous.
    /// </summary>
    private static readonly TimeSpan PollTimeout = TimeSpan.FromSeconds(5);

    private static CancellationTokenSource Poll() => new(PollTimeout);

    public NetnsCluster Cluster => cluster;

    /// <summary>The node's state (Up, Down, Draining) as <paramref name="observer"/> sees it; null when the observer cannot answer.</summary>
    public async Task<string?> NodeStateAsync(NetnsNode observer, string node)
    {
        try
        {
            using var poll = Poll();
            var json = await _http.GetFromJsonAsync<JsonElement>($"{observer.ApiUrl}/api/v1/nodes/{node}", poll.Token);
            return json.GetProperty("state").GetString();
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
        {
            return null;
        }
    }

    public async Task WaitForStateAsync(NetnsNode observer, NetnsNode node, string state, TimeSpan deadline)
    {
        var took = await Eventually.HoldsAsync(async () => await NodeStateAsync(observer, node.Name) == state, deadline,
            $"{observer.Name} sees {node.Name} {state}");
        TestContext.Current.TestOutputHelper?.WriteLine($"{observer.Name} saw {node.Name} {state} after {took.TotalSeconds:F1} s");
    }

    /// <summary>Whether the node's API answers at all (its link to the test process works).</summary>
    public async Task<bool> AnswersAsync(NetnsNode node, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            using var response = await _http.GetAsync($"{node.ApiUrl}/healthz", cts.Token);
            return response.IsSuccessStatusCode;
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>POST /api/v1/volumes through <paramref name="via"/>; returns the status and body.</summary>
    public async Task<(HttpStatusCode Status, string Body)> CreateVolumeAsync(NetnsNode via, string name, long sizeBytes, int replicas, string? node = null, string? pool = null)
    {
        using var response = await _http.PostAsJsonAsync($"{via.ApiUrl}/api/v1/volumes", new { name, size = sizeBytes, replicas, node, pool });
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    public async Task CreateVolumeOrThrowAsync(NetnsNode via, string name, long sizeBytes, int replicas, string? node = null, string? pool = null)
    {
        var (status, body) = await CreateVolumeAsync(via, name, sizeBytes, replicas, node, pool);
        if (status != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"creating volume {name} through {via.Name} answered {(int)status}: {body}");
        }
    }

    /// <summary>GET /api/v1/volumes/NAME: the owner node and the NBD export (host, port) to reach it; null while unavailable.</summary>
    public async Task<VolumeLocation?> LocateAsync(NetnsNode via, string name)
    {
        if (await VolumeJsonAsync(via, name) is not { } json || !json.GetProperty("available").GetBoolean())
        {
            return null;
        }
        var export = new Uri(json.GetProperty("export").GetString()!);
        return new VolumeLocation(json.GetProperty("node").GetString()!, export.Host, export.Port, name);
    }

    /// <summary>How much of the volume holds data, as its owner reports (0 when it cannot be asked).</summary>
    public async Task<long> AllocatedBytesAsync(NetnsNode via, string name) =>
        await VolumeJsonAsync(via, name) is { } json ? json.GetProperty("allocatedBytes").GetInt64() : 0;

    /// <summary>The volume as <paramref name="via"/>'s API describes it; null when it does not answer, or not with success.</summary>
    private async Task<JsonElement?> VolumeJsonAsync(NetnsNode via, string name)
    {
        try
        {
            using var poll = Poll();
            using var response = await _http.GetAsync($"{via.ApiUrl}/api/v1/volumes/{name}", poll.Token);
            return response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<JsonElement>(poll.Token) : null;
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or JsonException)
        {
            return null;
        }
    }

    /// <summary>Asks every node that answers until one says where the volume is served.</summary>
    public async Task<VolumeLocation> WaitForLocationAsync(string name, TimeSpan deadline)
    {
        VolumeLocation? found = null;
        await Eventually.HoldsAsync(async () =>
        {
            foreach (var node in cluster.Nodes.Where(n => n.IsRunning))
            {
                if ((found = await LocateAsync(node, name)) is not null)
                {
                    return true;
                }
            }
            return false;
        }, deadline, $"some node says where volume {name} is served");
        return found!;
    }

    public async Task DeleteVolumeAsync(NetnsNode via, string name)
    {
        using var response = await _http.DeleteAsync($"{via.ApiUrl}/api/v1/volumes/{name}?force=true");
        if (!response.IsSuccessStatusCode && response.StatusCode != HttpStatusCode.NotFound)
        {
            throw new InvalidOperationException($"deleting {name} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        }
    }

    /// <summary>The node's only pool's free bytes (GET /api/v1/pools on that node).</summary>
    public async Task<long> PoolFreeBytesAsync(NetnsNode node) => (await PoolAsync(node) ?? throw new InvalidOperationException($"{node.Name}'s API does not answer")).FreeBytes;

    /// <summary>The node's only pool as it reports it (GET /api/v1/pools on that node); null when the node does not answer.</summary>
    public async Task<PoolStatus?> PoolAsync(NetnsNode node)
    {
        try
        {
            using var poll = Poll();
            var json = await _http.GetFromJsonAsync<JsonElement>($"{node.ApiUrl}/api/v1/pools", poll.Token);
            var pool = json.GetProperty("pools").EnumerateArray().Single();
            return new PoolStatus(node.Name, pool.GetProperty("state").GetString()!, pool.GetProperty("fault").GetString(),
                pool.GetProperty("volumes").GetInt32(), pool.GetProperty("freeBytes").GetInt64());
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>The volume's replicas as its owner reports them and its health as the answering node's view judged it; null while unavailable.</summary>
    public async Task<VolumeStatus?> StatusAsync(NetnsNode via, string name)
    {
        if (await VolumeJsonAsync(via, name) is not { } json)
        {
            return null;
        }
        var health = json.TryGetProperty("health", out var h) && h.ValueKind == JsonValueKind.Object ? h : (JsonElement?)null;
        var replicas = json.TryGetProperty("replicas", out var r) && r.ValueKind == JsonValueKind.Array
            ? r.EnumerateArray().Select(m => new ReplicaStatus(m.GetProperty("node").GetString() ?? "?", m.GetProperty("state").GetString()!,
                m.TryGetProperty("reason", out var why) ? why.GetString() : null)).ToList()
            : [];
        return new VolumeStatus(json.GetProperty("node").GetString(), health?.GetProperty("state").GetString(), health?.GetProperty("reason").GetString(), replicas,
            json.TryGetProperty("epoch", out var e) && e.ValueKind == JsonValueKind.Number ? e.GetUInt64() : 0);
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>Where a volume is served: its owner and its NBD export.</summary>
internal sealed record VolumeLocation(string Node, string Host, int Port, string Export)
{
    public string Uri => $"nbd://{Host}:{Port}/{Export}";
}

/// <summary>A node's pool: "Ok" or "Failed" (with why), how many volumes it holds, its free bytes.</summary>
internal sealed record PoolStatus(string Node, string State, string? Fault, int Volumes, long FreeBytes)
{
    public override string ToString() => $"{Node}: {State}{(Fault is null ? "" : $" ({Fault})")}, {Volumes} volumes, {FreeBytes >> 20} MiB free";
}

internal sealed record ReplicaStatus(string Node, string State, string? Reason);

/// <summary>A volume's owner, health (Healthy, Degraded, Unavailable; null until judged), replicas and epoch.</summary>
internal sealed record VolumeStatus(string? Owner, string? Health, string? Reason, IReadOnlyList<ReplicaStatus> Replicas, ulong Epoch)
{
    public ReplicaStatus? Replica(string node) => Replicas.FirstOrDefault(r => r.Node == node);

    public override string ToString() =>
        $"owner {Owner}, epoch {Epoch}, {Health ?? "not judged"} ({Reason}); replicas {string.Join(", ", Replicas.Select(r => $"{r.Node} {r.State}"))}";
}

using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace Cairn.Integration.Tests.Faults;

/// <summary>The REST calls the fault tests make against a <see cref="NetnsCluster"/>'s nodes, with deadlines that suit a partitioned cluster.</summary>
internal sealed class ClusterApi(NetnsCluster cluster) : IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(15) };

    public NetnsCluster Cluster => cluster;

    /// <summary>The node's state (Up, Down, Draining) as <paramref name="observer"/> sees it; null when the observer cannot answer.</summary>
    public async Task<string?> NodeStateAsync(NetnsNode observer, string node)
    {
        try
        {
            var json = await _http.GetFromJsonAsync<JsonElement>($"{observer.ApiUrl}/api/v1/nodes/{node}");
            return json.GetProperty("state").GetString();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
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
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
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
        try
        {
            using var response = await _http.GetAsync($"{via.ApiUrl}/api/v1/volumes/{name}");
            if (!response.IsSuccessStatusCode)
            {
                return null;
            }
            var json = await response.Content.ReadFromJsonAsync<JsonElement>();
            var export = new Uri(json.GetProperty("export").GetString()!);
            return json.GetProperty("available").GetBoolean()
                ? new VolumeLocation(json.GetProperty("node").GetString()!, export.Host, export.Port, name)
                : null;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return null;
        }
    }

    /// <summary>How much of the volume holds data, as its owner reports (0 when it cannot be asked).</summary>
    public async Task<long> AllocatedBytesAsync(NetnsNode via, string name)
    {
        try
        {
            var json = await _http.GetFromJsonAsync<JsonElement>($"{via.ApiUrl}/api/v1/volumes/{name}");
            return json.GetProperty("allocatedBytes").GetInt64();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return 0;
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
    public async Task<long> PoolFreeBytesAsync(NetnsNode node)
    {
        var json = await _http.GetFromJsonAsync<JsonElement>($"{node.ApiUrl}/api/v1/pools");
        return json.GetProperty("pools").EnumerateArray().Single().GetProperty("freeBytes").GetInt64();
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>Where a volume is served: its owner and its NBD export.</summary>
internal sealed record VolumeLocation(string Node, string Host, int Port, string Export)
{
    public string Uri => $"nbd://{Host}:{Port}/{Export}";
}

using System.Net.Http.Json;
using System.Text.Json;
using Cairn.ControlPlane;
using Cairn.Daemon;
using Cairn.Testing;
using Microsoft.Extensions.Logging;

namespace Cairn.Api.Tests;

/// <summary>
/// A real cairnd (store, control plane, Kestrel on 127.0.0.1 port 0) inside the test process, on a temp data dir.
/// Pools are in memory unless realPools is set: these tests are about the API, not storage.
/// </summary>
internal sealed class DaemonFixture : IAsyncDisposable
{
    private DaemonFixture(CairnDaemon daemon, string dataDir, string announced)
    {
        Daemon = daemon;
        DataDir = dataDir;
        Announced = announced;
        Http = new HttpClient { BaseAddress = new Uri(daemon.ApiAddress) };
    }

    public CairnDaemon Daemon { get; }
    public string DataDir { get; }
    public string Announced { get; }
    public HttpClient Http { get; }
    public MemoryVolumePool? Pool { get; private set; }

    /// <summary>Cluster settings; null = a single node on the embedded store, named "node1".</summary>
    public sealed record ClusterOptions(string? Cluster, string Node = "node1", string Zone = "default", string Rack = "default", double LeaseTtlSeconds = 2);

    private ClusterOptions? _cluster;

    public static async Task<DaemonFixture> StartAsync(bool realPools = false, string? dataDir = null, MemoryVolumePool? pool = null, ClusterOptions? cluster = null)
    {
        var c = cluster ?? new ClusterOptions(null);
        dataDir ??= Path.Combine(Path.GetTempPath(), "cairn-api-" + Guid.NewGuid().ToString("N"));
        var announce = new StringWriter();
        pool ??= new MemoryVolumePool("default", 100L << 30);
        var daemon = await CairnDaemon.StartAsync(new DaemonOptions
        {
            DataDirectory = dataDir,
            ApiListen = "http://127.0.0.1:0",
            NbdListen = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0),
            IscsiListen = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0),
            Announce = announce,
            MinimumLogLevel = LogLevel.Warning,
            OpenPools = realPools ? null : (_, _) => new PoolManager([pool]),
            Cluster = c.Cluster,
            NodeName = c.Node,
            Zone = c.Zone,
            Rack = c.Rack,
            LeaseTtl = TimeSpan.FromSeconds(c.LeaseTtlSeconds),
        });
        return new DaemonFixture(daemon, dataDir, announce.ToString()) { Pool = realPools ? null : pool, _cluster = cluster };
    }

    /// <summary>Stops the daemon and starts a new one on the same data dir and pools.</summary>
    public async Task<DaemonFixture> RestartAsync()
    {
        Http.Dispose();
        await Daemon.DisposeAsync();
        return await StartAsync(Pool is null, DataDir, Pool, _cluster);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Daemon.DisposeAsync();
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    public Task<HttpResponseMessage> CreateAsync(string name, object size) =>
        Http.PostAsJsonAsync("/api/v1/volumes", new Dictionary<string, object> { ["name"] = name, ["size"] = size });

    public static async Task<JsonElement> JsonAsync(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
}

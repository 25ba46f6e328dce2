using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Cairn.Testing;

namespace Cairn.Api.Tests;

/// <summary>The node and cluster endpoints on a single node (embedded store): it lists itself, Up, and drains and undrains.</summary>
public sealed class NodeApiTests : IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private DaemonFixture _d = null!;

    public async ValueTask InitializeAsync() => _d = await DaemonFixture.StartAsync();

    public async ValueTask DisposeAsync() => await _d.DisposeAsync();

    private async Task<JsonElement> Get(string path)
    {
        var response = await _d.Http.GetAsync(path);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await DaemonFixture.JsonAsync(response);
    }

    [Fact]
    public async Task The_node_lists_itself_Up_with_its_addresses_domains_and_pools()
    {
        var nodes = (await Get("/api/v1/nodes")).GetProperty("nodes");
        var node = Assert.Single(nodes.EnumerateArray());
        Assert.Equal("node1", node.GetProperty("name").GetString());
        Assert.Equal("Up", node.GetProperty("state").GetString());
        Assert.False(node.GetProperty("draining").GetBoolean());
        Assert.Equal(_d.Daemon.ApiAddress, node.GetProperty("apiAddress").GetString());
        Assert.Equal($"nbd://127.0.0.1:{_d.Daemon.NbdEndpoint.Port}", node.GetProperty("nbdAddress").GetString());
        Assert.Equal(("default", "default"), (node.GetProperty("zone").GetString(), node.GetProperty("rack").GetString()));
        var pool = Assert.Single(node.GetProperty("pools").EnumerateArray());
        Assert.Equal(("default", 100L << 30, "100 GiB"), (pool.GetProperty("name").GetString(), pool.GetProperty("capacityBytes").GetInt64(), pool.GetProperty("capacity").GetString()));
        Assert.Equal(JsonValueKind.String, node.GetProperty("lastHeartbeat").ValueKind);

        var one = await Get("/api/v1/nodes/node1");
        Assert.Equal("Up", one.GetProperty("state").GetString());
    }

    [Fact]
    public async Task Unknown_and_malformed_node_names_are_problems()
    {
        var missing = await _d.Http.GetAsync("/api/v1/nodes/ghost");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("application/problem+json", missing.Content.Headers.ContentType?.MediaType);
        Assert.Contains("no node named 'ghost'", (await DaemonFixture.JsonAsync(missing)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await _d.Http.PostAsync("/api/v1/nodes/ghost/drain", null)).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _d.Http.GetAsync("/api/v1/nodes/Not%20A%20Name")).StatusCode);
        var noFlag = await _d.Http.PatchAsync("/api/v1/nodes/node1", JsonContent.Create(new { }));
        Assert.Equal(HttpStatusCode.BadRequest, noFlag.StatusCode);
        Assert.Contains("draining is required", (await DaemonFixture.JsonAsync(noFlag)).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Drain_and_undrain_round_trip_and_draining_survives_a_restart()
    {
        var drained = await DaemonFixture.JsonAsync(await _d.Http.PostAsync("/api/v1/nodes/node1/drain", null));
        Assert.Equal(("Draining", true), (drained.GetProperty("state").GetString(), drained.GetProperty("draining").GetBoolean()));
        var refused = await _d.CreateAsync("new-vol", "1MiB");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Contains("excluded node1: node is Draining (takes no new volumes)", (await DaemonFixture.JsonAsync(refused)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, (await Get("/api/v1/cluster")).GetProperty("nodesDraining").GetInt32());

        _d = await _d.RestartAsync();
        Assert.Equal("Draining", (await Get("/api/v1/nodes/node1")).GetProperty("state").GetString());

        var undrained = await DaemonFixture.JsonAsync(await _d.Http.PostAsync("/api/v1/nodes/node1/undrain", null));
        Assert.Equal("Up", undrained.GetProperty("state").GetString());
        Assert.Equal(HttpStatusCode.Created, (await _d.CreateAsync("new-vol", "1MiB")).StatusCode);
        var patched = await _d.Http.PatchAsync("/api/v1/nodes/node1", JsonContent.Create(new { draining = true }));
        Assert.Equal("Draining", (await DaemonFixture.JsonAsync(patched)).GetProperty("state").GetString());
    }

    [Fact]
    public async Task Cluster_status_names_the_store_this_node_and_the_elected_controller()
    {
        JsonElement status = default;
        await Eventually.HoldsAsync(async () =>
        {
            status = await Get("/api/v1/cluster");
            return status.GetProperty("leader").ValueKind == JsonValueKind.String;
        }, Deadline, "a controller is elected");
        Assert.Equal(("embedded", "node1", "node1"), (status.GetProperty("store").GetString(), status.GetProperty("thisNode").GetString(), status.GetProperty("leader").GetString()));
        Assert.Equal((1, 0), (status.GetProperty("nodesUp").GetInt32(), status.GetProperty("nodesDown").GetInt32()));
        Assert.True(_d.Daemon.IsController);
    }
}

/// <summary>One real etcd per class.</summary>
public sealed class EtcdFixture : IAsyncLifetime
{
    public EtcdServer Server { get; private set; } = null!;

    public async ValueTask InitializeAsync() => Server = await EtcdServer.StartAsync();

    public async ValueTask DisposeAsync() => await Server.DisposeAsync();

    /// <summary>Tests sharing this etcd each start from an empty /cairn/.</summary>
    public async Task WipeAsync()
    {
        await using var store = Cairn.ClusterStore.ClusterStoreFactory.Open(Server.Spec);
        foreach (var kv in (await store.RangeAsync("/cairn/")).Items)
        {
            await store.DeleteAsync(kv.Key);
        }
    }
}

/// <summary>Two cairnd nodes on one real etcd: one view of the cluster from either, volumes per node, 503 when etcd is gone.</summary>
public sealed class ClusterApiTests(EtcdFixture etcd) : IClassFixture<EtcdFixture>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    private Task WipeAsync() => etcd.WipeAsync();

    private Task<DaemonFixture> Node(string name, string zone) =>
        DaemonFixture.StartAsync(cluster: new DaemonFixture.ClusterOptions(etcd.Server.Spec, name, zone, "r1"));

    private static async Task<JsonElement> Get(DaemonFixture d, string path)
    {
        var response = await d.Http.GetAsync(path);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        return await DaemonFixture.JsonAsync(response);
    }

    [Fact]
    public async Task Cairnd_flags_from_a_config_file_join_the_etcd_cluster_under_the_given_name_zone_and_rack()
    {
        await WipeAsync();
        string dir = Path.Combine(Path.GetTempPath(), "cairn-cmd-" + Guid.NewGuid().ToString("N"));
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        using var stop = new CancellationTokenSource();
        // The cluster flags come from a config file (one flag per line, given as @FILE), the rest from the command line.
        Directory.CreateDirectory(dir);
        string config = Path.Combine(dir, "cairnd.conf");
        await File.WriteAllLinesAsync(config, ["--cluster " + etcd.Server.Spec, "--node flagged", "--zone zone-a", "--rack rack-7", "--lease-ttl 2"]);
        var run = Cairn.Daemon.DaemonCommandLine.RunAsync(
            ["--data-dir", dir, "--pool", Path.Combine(dir, "pools", "fast") + ":1GiB", "--api-listen", "http://127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--iscsi-listen", "127.0.0.1:0",
             "@" + config],
            TextWriter.Synchronized(stdout), TextWriter.Synchronized(stderr), stop.Token);
        try
        {
            await Eventually.HoldsAsync(() => run.IsCompleted || stdout.ToString().Contains("cairnd: ready", StringComparison.Ordinal), Deadline, "cairnd is ready");
            Assert.False(run.IsCompleted, $"cairnd exited: {stderr}");
            string api = stdout.ToString().Split('\n')[0].Trim()["cairnd: api listening on ".Length..];
            using var http = new HttpClient { BaseAddress = new Uri(api) };
            var node = await DaemonFixture.JsonAsync(await http.GetAsync("/api/v1/nodes/flagged"));
            Assert.Equal(("Up", "zone-a", "rack-7"), (node.GetProperty("state").GetString(), node.GetProperty("zone").GetString(), node.GetProperty("rack").GetString()));
            Assert.Equal("fast", node.GetProperty("pools")[0].GetProperty("name").GetString());
            var cluster = await DaemonFixture.JsonAsync(await http.GetAsync("/api/v1/cluster"));
            Assert.Equal(("etcd", "flagged"), (cluster.GetProperty("store").GetString(), cluster.GetProperty("thisNode").GetString()));
            Assert.False(Directory.Exists(Path.Combine(dir, "cluster-store")), "with --cluster the embedded store must not be created");
        }
        finally
        {
            await stop.CancelAsync();
            Assert.Equal(0, await run);
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// A request for a volume on the other node is relayed and its answer passed back as is: a grow's 200 with its body,
    /// a delete's 204 with none, a second delete's 404 naming the volume (<see cref="RelayedResultTests"/> pins the 204).
    /// </summary>
    [Fact]
    public async Task Requests_through_the_node_that_does_not_own_a_volume_are_answered_as_the_owner_answers_them()
    {
        await WipeAsync();
        await using var a = await Node("a", "z1");
        await using var b = await Node("b", "z2");
        string owner = (await DaemonFixture.JsonAsync(await a.CreateAsync("relayed", "1MiB"))).GetProperty("node").GetString()!;
        var other = owner == "a" ? b : a;

        var grown = await other.Http.PatchAsJsonAsync("/api/v1/volumes/relayed", new Dictionary<string, object> { ["size"] = "2MiB" });
        Assert.Equal(HttpStatusCode.OK, grown.StatusCode);
        Assert.Equal(2L << 20, (await DaemonFixture.JsonAsync(grown)).GetProperty("sizeBytes").GetInt64());

        var deleted = await other.Http.DeleteAsync("/api/v1/volumes/relayed?force=true");
        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        Assert.Empty(await deleted.Content.ReadAsByteArrayAsync());
        foreach (var d in new[] { a, b })
        {
            Assert.Equal(HttpStatusCode.NotFound, (await d.Http.GetAsync("/api/v1/volumes/relayed")).StatusCode);
        }
        var missing = await other.Http.DeleteAsync("/api/v1/volumes/relayed");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("relayed", (await DaemonFixture.JsonAsync(missing)).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Two_nodes_see_one_cluster_own_their_volumes_hand_over_the_controller_and_answer_503_without_etcd()
    {
        await WipeAsync();
        var a = await Node("a", "z1");
        var b = await Node("b", "z2");
        try
        {
            var nodes = (await Get(b, "/api/v1/nodes")).GetProperty("nodes").EnumerateArray()
                .Select(n => (n.GetProperty("name").GetString(), n.GetProperty("state").GetString(), n.GetProperty("zone").GetString())).ToList();
            Assert.Equal([("a", "Up", "z1"), ("b", "Up", "z2")], nodes);

            string? leader = null;
            await Eventually.HoldsAsync(async () => (leader = (await Get(a, "/api/v1/cluster")).GetProperty("leader").GetString()) is not null, Deadline, "a controller is elected");
            var statusB = await Get(b, "/api/v1/cluster");
            Assert.Equal(("etcd", "b", leader), (statusB.GetProperty("store").GetString(), statusB.GetProperty("thisNode").GetString(), statusB.GetProperty("leader").GetString()));
            Assert.Single(new[] { a, b }, d => d.Daemon.IsController);

            // Placement puts a volume on one node; every node lists it, answers for it, and knows its name is taken.
            var created = await DaemonFixture.JsonAsync(await a.CreateAsync("shared-name", "1MiB"));
            string owner = created.GetProperty("node").GetString()!;
            Assert.Contains(owner, new[] { "a", "b" });
            var (ownerNode, other) = owner == "a" ? (a, b) : (b, a);
            foreach (var d in new[] { a, b })
            {
                var listed = Assert.Single((await Get(d, "/api/v1/volumes")).GetProperty("volumes").EnumerateArray());
                Assert.Equal(("shared-name", owner, true), (listed.GetProperty("name").GetString(), listed.GetProperty("node").GetString(), listed.GetProperty("available").GetBoolean()));
                Assert.Equal(owner, (await Get(d, "/api/v1/volumes/shared-name")).GetProperty("node").GetString());
            }
            Assert.Empty((await Get(other, "/api/v1/volumes?scope=local")).GetProperty("volumes").EnumerateArray());
            Assert.Single((await Get(ownerNode, "/api/v1/volumes?scope=local")).GetProperty("volumes").EnumerateArray());
            Assert.Equal(HttpStatusCode.Conflict, (await b.CreateAsync("shared-name", "1MiB")).StatusCode);

            // The controller stops: the other node shows it Down at once and takes over without waiting for its lease.
            var (gone, stays) = leader == "a" ? (a, b) : (b, a);
            a = b = stays; // from here on, only the survivor is ours to stop
            await gone.DisposeAsync();
            Assert.Equal("Down", (await Get(stays, $"/api/v1/nodes/{leader}")).GetProperty("state").GetString());
            await Eventually.HoldsAsync(() => stays.Daemon.IsController, Deadline, "the other node becomes controller");

            await etcd.Server.StopAsync();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var unavailable = await stays.Http.GetAsync("/api/v1/nodes");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, unavailable.StatusCode);
            Assert.Contains("control plane unavailable", (await DaemonFixture.JsonAsync(unavailable)).GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed} to answer");
        }
        finally
        {
            await a.DisposeAsync();
            if (!ReferenceEquals(a, b))
            {
                await b.DisposeAsync();
            }
            await etcd.Server.StartAgainAsync();
        }
    }
}

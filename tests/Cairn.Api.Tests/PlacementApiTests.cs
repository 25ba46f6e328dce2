using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Cairn.Testing;

namespace Cairn.Api.Tests;

/// <summary>
/// Three cairnd nodes on one real etcd — a (zone z1, rack r1), b (z1, r2), c (z2, r1) — and placement through the API:
/// dry runs that explain, spread rules met and refused, Draining honoured, creates spread by provisioning and passed to
/// the chosen node, and any node answering for every volume.
/// </summary>
public sealed class PlacementApiTests(EtcdFixture etcd) : IClassFixture<EtcdFixture>, IAsyncLifetime
{
    private readonly Dictionary<string, DaemonFixture> _nodes = new(StringComparer.Ordinal);

    public async ValueTask InitializeAsync()
    {
        await etcd.WipeAsync();
        foreach (var (name, zone, rack) in new[] { ("a", "z1", "r1"), ("b", "z1", "r2"), ("c", "z2", "r1") })
        {
            _nodes[name] = await DaemonFixture.StartAsync(cluster: new DaemonFixture.ClusterOptions(etcd.Server.Spec, name, zone, rack));
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes.Values)
        {
            await node.DisposeAsync();
        }
    }

    private HttpClient A => _nodes["a"].Http;

    private static async Task<JsonElement> Send(HttpClient http, string path, object body, HttpStatusCode expected)
    {
        var response = await http.PostAsJsonAsync(path, body);
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"{path}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private Task<JsonElement> DryRun(int replicas, string spread) =>
        Send(A, "/api/v1/volumes?dryRun=true", new { name = "planned", size = "10GiB", replicas, spread }, HttpStatusCode.OK);

    private static List<string> Chosen(JsonElement plan) =>
        [.. plan.GetProperty("replicas").EnumerateArray().Select(r => r.GetProperty("node").GetString()!).Order(StringComparer.Ordinal)];

    private static string ReasonFor(JsonElement plan, string node) =>
        plan.GetProperty("nodes").EnumerateArray().Single(n => n.GetProperty("node").GetString() == node).GetProperty("reason").GetString()!;

    [Fact]
    public async Task Dry_runs_spread_over_zones_and_racks_and_explain_every_node()
    {
        var zones = await DryRun(2, "zone");
        Assert.True(zones.GetProperty("placed").GetBoolean());
        var chosen = Chosen(zones);
        Assert.Contains("c", chosen); // the only node in z2
        string loser = new[] { "a", "b" }.Single(n => !chosen.Contains(n));
        Assert.Matches("^zone z1 already holds replica [01] \\(on [ab]\\)$", ReasonFor(zones, loser));

        Assert.Equal(["a", "b", "c"], Chosen(await DryRun(3, "rack")));

        var impossible = await DryRun(3, "zone");
        Assert.False(impossible.GetProperty("placed").GetBoolean());
        Assert.Equal("3 replicas need 3 zones with an eligible node; 2 have one (z1, z2)", impossible.GetProperty("reason").GetString());
        Assert.Empty(impossible.GetProperty("replicas").EnumerateArray());

        Assert.Equal(["a", "b", "c"], Chosen(await DryRun(3, "zone:preferred")));
        Assert.Empty((await A.GetFromJsonAsync<JsonElement>("/api/v1/volumes")).GetProperty("volumes").EnumerateArray()); // dry runs create nothing
    }

    [Fact]
    public async Task Draining_nodes_are_excluded_with_their_reason()
    {
        Assert.Equal(HttpStatusCode.OK, (await A.PostAsync("/api/v1/nodes/c/drain", null)).StatusCode);

        var plan = await DryRun(2, "zone");
        Assert.False(plan.GetProperty("placed").GetBoolean());
        Assert.Equal("node is Draining (takes no new volumes)", ReasonFor(plan, "c"));
        Assert.EndsWith("excluded c: node is Draining (takes no new volumes)", plan.GetProperty("reason").GetString(), StringComparison.Ordinal);
        var refused = await Send(A, "/api/v1/volumes", new { name = "v", size = "1GiB", node = "c" }, HttpStatusCode.ServiceUnavailable);
        Assert.Contains("c: node is Draining", refused.GetProperty("detail").GetString(), StringComparison.Ordinal);

        Assert.Equal(HttpStatusCode.OK, (await A.PostAsync("/api/v1/nodes/c/undrain", null)).StatusCode);
        Assert.True((await DryRun(2, "zone")).GetProperty("placed").GetBoolean());
    }

    [Fact]
    public async Task Creates_spread_by_provisioning_and_every_node_answers_for_every_volume()
    {
        for (int i = 0; i < 6; i++)
        {
            await Send(A, "/api/v1/volumes", new { name = $"v{i}", size = "10GiB" }, HttpStatusCode.Created);
        }
        var volumes = (await _nodes["b"].Http.GetFromJsonAsync<JsonElement>("/api/v1/volumes")).GetProperty("volumes").EnumerateArray().ToList();
        Assert.Equal(6, volumes.Count);
        var perNode = volumes.GroupBy(v => v.GetProperty("node").GetString()).ToDictionary(g => g.Key!, g => g.Count());
        Assert.Equal(new Dictionary<string, int> { ["a"] = 2, ["b"] = 2, ["c"] = 2 }, perNode);

        // A volume on c, grown through a and deleted through b: each request reaches the owner.
        string onC = volumes.First(v => v.GetProperty("node").GetString() == "c").GetProperty("name").GetString()!;
        var grown = await A.PatchAsJsonAsync($"/api/v1/volumes/{onC}", new { size = "20GiB" });
        Assert.Equal(20L << 30, (await DaemonFixture.JsonAsync(grown)).GetProperty("sizeBytes").GetInt64());
        Assert.Equal(20L << 30, (await _nodes["c"].Http.GetFromJsonAsync<JsonElement>($"/api/v1/volumes/{onC}")).GetProperty("sizeBytes").GetInt64());
        Assert.Equal(HttpStatusCode.NoContent, (await _nodes["b"].Http.DeleteAsync($"/api/v1/volumes/{onC}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _nodes["c"].Http.GetAsync($"/api/v1/volumes/{onC}")).StatusCode);
    }

    [Fact]
    public async Task Replicated_creates_put_every_copy_on_its_own_node_in_sync_at_epoch_1()
    {
        var created = await Send(A, "/api/v1/volumes", new { name = "pair", size = "1GiB", replicas = 2 }, HttpStatusCode.Created);
        var replicas = created.GetProperty("replicas").EnumerateArray().ToList();
        Assert.Equal(2, replicas.Count);
        Assert.Equal(2, replicas.Select(r => r.GetProperty("node").GetString()).Distinct().Count());
        Assert.All(replicas, r => Assert.Equal("InSync", r.GetProperty("state").GetString()));
        Assert.Equal(created.GetProperty("node").GetString(), replicas.Single(r => r.GetProperty("owner").GetBoolean()).GetProperty("node").GetString());
        Assert.Equal(1UL, created.GetProperty("epoch").GetUInt64());
    }

    [Fact]
    public async Task Pinned_creates_go_to_the_named_node_and_bad_requests_name_the_field()
    {
        var pinned = await Send(A, "/api/v1/volumes", new { name = "pinned", size = "1GiB", node = "b", pool = "default" }, HttpStatusCode.Created);
        Assert.Equal(("b", "default"), (pinned.GetProperty("node").GetString(), pinned.GetProperty("pool").GetString()));

        async Task BadRequest(object body, string field, string reason)
        {
            var problem = await Send(A, "/api/v1/volumes", body, HttpStatusCode.BadRequest);
            Assert.Contains(reason, problem.GetProperty("errors").GetProperty(field)[0].GetString(), StringComparison.Ordinal);
        }
        await BadRequest(new { name = "x", size = "1GiB", pool = "default" }, "pool", "give node as well");
        await BadRequest(new { name = "x", size = "1GiB", replicas = 9 }, "replicas", "between 1 and 5");
        await BadRequest(new { name = "x", size = "1GiB", spread = "region" }, "spread", "not one of node, rack, zone");
        await BadRequest(new { name = "x", size = "1GiB", node = "Bad Name!" }, "node", "node name");
        var missingPool = await Send(A, "/api/v1/volumes", new { name = "x", size = "1GiB", node = "c", pool = "nope" }, HttpStatusCode.NotFound);
        Assert.Contains("has no pool named 'nope'", missingPool.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Conflict, (await A.PostAsJsonAsync("/api/v1/volumes", new { name = "pinned", size = "1GiB" })).StatusCode);
        Assert.Single((await A.GetFromJsonAsync<JsonElement>("/api/v1/volumes")).GetProperty("volumes").EnumerateArray());
    }

    [Fact]
    public async Task A_down_owner_leaves_its_volumes_listed_as_unavailable()
    {
        await Send(A, "/api/v1/volumes", new { name = "on-c", size = "1GiB", node = "c" }, HttpStatusCode.Created);
        await _nodes["c"].DisposeAsync();
        _nodes.Remove("c");

        await Eventually.HoldsAsync(async () => (await A.GetFromJsonAsync<JsonElement>("/api/v1/nodes/c")).GetProperty("state").GetString() == "Down",
            TimeSpan.FromSeconds(20), "c shows Down");
        var listed = Assert.Single((await A.GetFromJsonAsync<JsonElement>("/api/v1/volumes")).GetProperty("volumes").EnumerateArray());
        Assert.Equal(("on-c", "c", false), (listed.GetProperty("name").GetString(), listed.GetProperty("node").GetString(), listed.GetProperty("available").GetBoolean()));
        var get = await A.GetAsync("/api/v1/volumes/on-c");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, get.StatusCode);
        Assert.Contains("lives on node 'c', which is Down", await get.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }
}

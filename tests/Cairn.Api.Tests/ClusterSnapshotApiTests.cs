using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace Cairn.Api.Tests;

/// <summary>Snapshots, clones, revert and scrub asked of a node that does not own the volume reach the owner.</summary>
public sealed class ClusterSnapshotApiTests(EtcdFixture etcd) : IClassFixture<EtcdFixture>
{
    [Fact]
    public async Task Snapshot_requests_and_clones_through_any_node_reach_the_volume_s_owner()
    {
        await etcd.WipeAsync();
        await using var a = await DaemonFixture.StartAsync(realPools: true, cluster: new DaemonFixture.ClusterOptions(etcd.Server.Spec, "a", "z1"));
        await using var b = await DaemonFixture.StartAsync(realPools: true, cluster: new DaemonFixture.ClusterOptions(etcd.Server.Spec, "b", "z2"));

        Assert.Equal(HttpStatusCode.Created, (await a.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "db", size = "16MiB", node = "b" })).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await a.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "s1" })).StatusCode);
        var snapshots = await a.Http.GetFromJsonAsync<JsonElement>("/api/v1/volumes/db/snapshots");
        Assert.Equal("s1", Assert.Single(snapshots.GetProperty("snapshots").EnumerateArray()).GetProperty("name").GetString());
        Assert.Equal("s1", (await b.Http.GetFromJsonAsync<JsonElement>("/api/v1/volumes/db/snapshots/s1")).GetProperty("name").GetString());

        var clone = await a.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "db-copy", source = new { volume = "db", snapshot = "s1" } });
        Assert.Equal(HttpStatusCode.Created, clone.StatusCode);
        Assert.Equal("b", (await DaemonFixture.JsonAsync(clone)).GetProperty("node").GetString()); // beside its source
        var placed = await a.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "x", node = "a", source = new { volume = "db", snapshot = "s1" } });
        Assert.Equal(HttpStatusCode.BadRequest, placed.StatusCode);

        var revert = await a.Http.PostAsJsonAsync("/api/v1/volumes/db/revert", new { snapshot = "s1" });
        Assert.Equal(HttpStatusCode.OK, revert.StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await a.Http.DeleteAsync("/api/v1/volumes/db/snapshots/s1")).StatusCode);
        Assert.Empty((await b.Http.GetFromJsonAsync<JsonElement>("/api/v1/volumes/db/snapshots")).GetProperty("snapshots").EnumerateArray());
    }
}

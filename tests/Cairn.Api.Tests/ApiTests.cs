using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Cairn.Api.Tests;

public sealed class ApiTests : IAsyncLifetime
{
    private const long GiB = 1L << 30;
    private DaemonFixture _d = null!;

    public async ValueTask InitializeAsync() => _d = await DaemonFixture.StartAsync();

    public async ValueTask DisposeAsync() => await _d.DisposeAsync();

    private HttpClient Http => _d.Http;

    /// <summary>Checks the RFC 9457 shape every error has, and that it names the field and the reason.</summary>
    private static async Task<JsonElement> AssertProblem(HttpResponseMessage response, HttpStatusCode status, string? field, string reason)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await DaemonFixture.JsonAsync(response);
        Assert.Equal((int)status, problem.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("title").GetString()));
        Assert.Contains(reason, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        if (field is not null)
        {
            var messages = problem.GetProperty("errors").GetProperty(field);
            Assert.Contains(reason, messages[0].GetString(), StringComparison.Ordinal);
        }
        return problem;
    }

    [Fact]
    public void The_daemon_announces_its_api_address_and_readiness_on_stdout()
    {
        var lines = _d.Announced.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Matches(@"^cairnd: api listening on http://127\.0\.0\.1:\d+$", lines[0]);
        Assert.Equal($"cairnd: api listening on {_d.Daemon.ApiAddress}", lines[0]);
        Assert.Matches(@"^cairnd: nbd listening on 127\.0\.0\.1:\d+$", lines[1]);
        Assert.Equal($"cairnd: nbd listening on 127.0.0.1:{_d.Daemon.NbdEndpoint.Port}", lines[1]);
        Assert.Equal($"cairnd: iscsi listening on 127.0.0.1:{_d.Daemon.IscsiEndpoint.Port}", lines[2]);
        Assert.Equal("cairnd: ready", lines[3]);
        Assert.Equal(4, lines.Length);
    }

    [Fact]
    public async Task Healthz_answers_ok()
    {
        var health = await DaemonFixture.JsonAsync(await Http.GetAsync("/healthz"));
        Assert.Equal("ok", health.GetProperty("status").GetString());
    }

    [Fact]
    public async Task The_openapi_document_describes_every_route()
    {
        var response = await Http.GetAsync("/openapi/v1.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var doc = await DaemonFixture.JsonAsync(response);
        var paths = doc.GetProperty("paths");
        Assert.True(paths.TryGetProperty("/api/v1/volumes", out var volumes));
        Assert.True(volumes.TryGetProperty("post", out _));
        Assert.True(paths.GetProperty("/api/v1/volumes/{name}").TryGetProperty("patch", out _));
        Assert.True(paths.GetProperty("/api/v1/volumes/{name}").TryGetProperty("delete", out _));
        Assert.True(paths.TryGetProperty("/api/v1/pools", out _));
    }

    [Fact]
    public async Task Create_returns_201_with_location_bytes_and_human_sizes()
    {
        var response = await _d.CreateAsync("vol1", "10GiB");
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("/api/v1/volumes/vol1", response.Headers.Location?.OriginalString);
        var v = await DaemonFixture.JsonAsync(response);
        Assert.Equal("vol1", v.GetProperty("name").GetString());
        Assert.Equal(10 * GiB, v.GetProperty("sizeBytes").GetInt64());
        Assert.Equal("10 GiB", v.GetProperty("size").GetString());
        Assert.Equal(0, v.GetProperty("allocatedBytes").GetInt64());
        Assert.Equal("0 B", v.GetProperty("allocated").GetString());
        Assert.Equal("default", v.GetProperty("pool").GetString());
        Assert.Equal(32, v.GetProperty("id").GetString()!.Length);
        Assert.Equal(JsonValueKind.Array, v.GetProperty("clients").ValueKind);
        Assert.True(v.GetProperty("available").GetBoolean());
        Assert.Equal($"nbd://127.0.0.1:{_d.Daemon.NbdEndpoint.Port}/vol1", v.GetProperty("export").GetString());
        Assert.True(v.TryGetProperty("createdAt", out _));
    }

    [Fact]
    public async Task Size_may_be_a_number_of_bytes_or_a_string_in_mib()
    {
        Assert.Equal(1048576, (await DaemonFixture.JsonAsync(await _d.CreateAsync("a", 1048576))).GetProperty("sizeBytes").GetInt64());
        Assert.Equal(512L << 20, (await DaemonFixture.JsonAsync(await _d.CreateAsync("b", "512MiB"))).GetProperty("sizeBytes").GetInt64());
        Assert.Equal(8192, (await DaemonFixture.JsonAsync(await _d.CreateAsync("c", "8192"))).GetProperty("sizeBytes").GetInt64());
    }

    [Fact]
    public async Task List_and_show_return_what_was_created()
    {
        await _d.CreateAsync("b-vol", "1GiB");
        await _d.CreateAsync("a-vol", "2GiB");
        var list = await DaemonFixture.JsonAsync(await Http.GetAsync("/api/v1/volumes"));
        Assert.Equal(["a-vol", "b-vol"], list.GetProperty("volumes").EnumerateArray().Select(v => v.GetProperty("name").GetString()));
        var show = await Http.GetAsync("/api/v1/volumes/a-vol");
        Assert.Equal(HttpStatusCode.OK, show.StatusCode);
        Assert.Equal(2 * GiB, (await DaemonFixture.JsonAsync(show)).GetProperty("sizeBytes").GetInt64());
    }

    [Fact]
    public async Task Show_lists_connected_clients()
    {
        await _d.CreateAsync("v", "1GiB");
        using var session = _d.Daemon.Volumes.TryOpen("v", "127.0.0.1:40000");
        var v = await DaemonFixture.JsonAsync(await Http.GetAsync("/api/v1/volumes/v"));
        Assert.Equal("127.0.0.1:40000", v.GetProperty("clients")[0].GetProperty("client").GetString());
    }

    [Fact]
    public async Task Unknown_volume_is_404_on_every_verb()
    {
        var get = await AssertProblem(await Http.GetAsync("/api/v1/volumes/nope"), HttpStatusCode.NotFound, "name", "no volume named 'nope'");
        Assert.Equal("NotFound", get.GetProperty("code").GetString());
        await AssertProblem(await Http.PatchAsJsonAsync("/api/v1/volumes/nope", new { size = "2GiB" }), HttpStatusCode.NotFound, "name", "no volume named");
        await AssertProblem(await Http.DeleteAsync("/api/v1/volumes/nope"), HttpStatusCode.NotFound, "name", "no volume named");
    }

    [Fact]
    public async Task Duplicate_name_is_409()
    {
        await _d.CreateAsync("v", "1GiB");
        await AssertProblem(await _d.CreateAsync("v", "1GiB"), HttpStatusCode.Conflict, "name", "already exists");
    }

    [Theory]
    [InlineData("\"ten gigs\"", "is not a size")]
    [InlineData("\"-5GiB\"", "is not a size")]
    [InlineData("0", "not a positive whole number of bytes")]
    [InlineData("1.5", "not a positive whole number of bytes")]
    [InlineData("1000", "not a multiple of 512")]
    [InlineData("true", "must be a number or a string")]
    [InlineData("null", "size is required")]
    public async Task Bad_size_is_400_naming_size(string sizeJson, string reason)
    {
        var body = new StringContent($"{{\"name\":\"v\",\"size\":{sizeJson}}}", Encoding.UTF8, "application/json");
        await AssertProblem(await Http.PostAsync("/api/v1/volumes", body), HttpStatusCode.BadRequest, "size", reason);
    }

    [Theory]
    [InlineData("Vol", "must start with a lowercase letter or a digit")]
    [InlineData("a/b", "contains '/'")]
    [InlineData("", "volume name is required")]
    public async Task Bad_name_is_400_naming_name(string name, string reason)
    {
        await AssertProblem(await _d.CreateAsync(name, "1GiB"), HttpStatusCode.BadRequest, "name", reason);
    }

    [Theory]
    [InlineData("{\"name\": \"v\", ", "body", "not valid JSON")]
    [InlineData("", "body", "request body is empty")]
    [InlineData("{\"name\": 5, \"size\": \"1GiB\"}", "name", "not valid JSON")]
    public async Task Malformed_json_is_400_naming_the_problem(string json, string field, string reason)
    {
        var body = new StringContent(json, Encoding.UTF8, "application/json");
        await AssertProblem(await Http.PostAsync("/api/v1/volumes", body), HttpStatusCode.BadRequest, field, reason);
    }

    [Fact]
    public async Task Patch_grows_and_refuses_to_shrink()
    {
        await _d.CreateAsync("v", "2GiB");
        var grown = await Http.PatchAsJsonAsync("/api/v1/volumes/v", new { size = "20GiB" });
        Assert.Equal(HttpStatusCode.OK, grown.StatusCode);
        Assert.Equal(20 * GiB, (await DaemonFixture.JsonAsync(grown)).GetProperty("sizeBytes").GetInt64());

        await AssertProblem(await Http.PatchAsJsonAsync("/api/v1/volumes/v", new { size = "1GiB" }), HttpStatusCode.BadRequest, "size", "can only grow");
        await AssertProblem(await Http.PatchAsJsonAsync("/api/v1/volumes/v", new { }), HttpStatusCode.BadRequest, "size", "size is required");
    }

    [Fact]
    public async Task Delete_returns_204_and_the_volume_is_gone()
    {
        await _d.CreateAsync("v", "1GiB");
        Assert.Equal(HttpStatusCode.NoContent, (await Http.DeleteAsync("/api/v1/volumes/v")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Http.GetAsync("/api/v1/volumes/v")).StatusCode);
        Assert.Empty(_d.Pool!.ListVolumes());
    }

    [Fact]
    public async Task Delete_while_connected_is_409_and_force_revokes_the_client()
    {
        await _d.CreateAsync("v", "1GiB");
        using var session = _d.Daemon.Volumes.TryOpen("v", "10.1.1.1:5000")!;
        var problem = await AssertProblem(await Http.DeleteAsync("/api/v1/volumes/v"), HttpStatusCode.Conflict, null, "connected client");
        Assert.Contains("force", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);

        await AssertProblem(await Http.DeleteAsync("/api/v1/volumes/v?force=maybe"), HttpStatusCode.BadRequest, "force", "force must be true or false");
        Assert.Equal(HttpStatusCode.NoContent, (await Http.DeleteAsync("/api/v1/volumes/v?force=true")).StatusCode);
        Assert.True(session.Revoked.IsCancellationRequested);
    }

    [Fact]
    public async Task Pools_report_capacity_used_and_free()
    {
        var pools = await DaemonFixture.JsonAsync(await Http.GetAsync("/api/v1/pools"));
        var pool = pools.GetProperty("pools")[0];
        Assert.Equal("default", pool.GetProperty("name").GetString());
        Assert.Equal(100 * GiB, pool.GetProperty("capacityBytes").GetInt64());
        Assert.Equal("100 GiB", pool.GetProperty("capacity").GetString());
        Assert.Equal(0, pool.GetProperty("usedBytes").GetInt64());
        Assert.Equal(100 * GiB, pool.GetProperty("freeBytes").GetInt64());
        Assert.Equal(0, pool.GetProperty("volumes").GetInt32());
        Assert.Equal("Ok", pool.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, pool.GetProperty("fault").ValueKind);
    }

    [Fact]
    public async Task A_failed_pool_says_so_and_why()
    {
        var d = await DaemonFixture.StartAsync(pool: new Cairn.Testing.MemoryVolumePool("default") { Fault = "metadata sync failed (EIO)" });
        try
        {
            var pool = (await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/pools"))).GetProperty("pools")[0];
            Assert.Equal("Failed", pool.GetProperty("state").GetString());
            Assert.Equal("metadata sync failed (EIO)", pool.GetProperty("fault").GetString());
        }
        finally
        {
            await d.DisposeAsync();
        }
    }

    [Fact]
    public async Task Unknown_routes_answer_with_a_problem()
    {
        var response = await Http.GetAsync("/api/v1/nothing-here");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Volumes_survive_a_daemon_restart_on_the_same_data_dir()
    {
        await _d.CreateAsync("keep", "3GiB");
        await _d.CreateAsync("gone", "1GiB");
        await Http.DeleteAsync("/api/v1/volumes/gone");
        _d = await _d.RestartAsync();
        var list = await DaemonFixture.JsonAsync(await Http.GetAsync("/api/v1/volumes"));
        var only = Assert.Single(list.GetProperty("volumes").EnumerateArray());
        Assert.Equal(("keep", 3 * GiB), (only.GetProperty("name").GetString(), only.GetProperty("sizeBytes").GetInt64()));
    }
}

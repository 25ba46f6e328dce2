using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Cairn.Api.Tests;

/// <summary>Snapshots, clones, revert and scrub through the REST API of a real in-process cairnd on real pools.</summary>
public sealed class SnapshotApiTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Snapshots_are_created_listed_shown_and_deleted_with_clear_errors()
    {
        await using var d = await DaemonFixture.StartAsync(realPools: true);
        await d.CreateAsync("db", "16MiB");
        var created = await d.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "monday" }, Ct);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal("/api/v1/volumes/db/snapshots/monday", created.Headers.Location?.OriginalString);
        var snapshot = await DaemonFixture.JsonAsync(created);
        Assert.Equal(16L << 20, snapshot.GetProperty("sizeBytes").GetInt64());
        Assert.EndsWith("/db@monday", snapshot.GetProperty("export").GetString(), StringComparison.Ordinal);

        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "monday" }, Ct), HttpStatusCode.Conflict, "name");
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "Bad Name" }, Ct), HttpStatusCode.BadRequest, "name");
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes/nope/snapshots", new { name = "x" }, Ct), HttpStatusCode.NotFound, "name");
        await AssertProblem(await d.Http.GetAsync("/api/v1/volumes/db/snapshots/tuesday", Ct), HttpStatusCode.NotFound, "snapshot");
        await AssertProblem(await d.Http.DeleteAsync("/api/v1/volumes/db/snapshots/tuesday", Ct), HttpStatusCode.NotFound, "snapshot");

        Assert.Equal(HttpStatusCode.Created, (await d.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "tuesday" }, Ct)).StatusCode);
        var list = await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/db/snapshots", Ct));
        Assert.Equal(["monday", "tuesday"], list.GetProperty("snapshots").EnumerateArray().Select(s => s.GetProperty("name").GetString()));
        Assert.Equal(HttpStatusCode.NoContent, (await d.Http.DeleteAsync("/api/v1/volumes/db/snapshots/monday", Ct)).StatusCode);
        list = await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/db/snapshots", Ct));
        Assert.Equal(["tuesday"], list.GetProperty("snapshots").EnumerateArray().Select(s => s.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task A_clone_is_a_volume_made_from_a_snapshot_and_bad_sources_are_refused_by_field()
    {
        await using var d = await DaemonFixture.StartAsync(realPools: true);
        await d.CreateAsync("db", "16MiB");
        await d.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "s" }, Ct);
        var clone = await d.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "db-copy", source = new { volume = "db", snapshot = "s" } }, Ct);
        Assert.Equal(HttpStatusCode.Created, clone.StatusCode);
        Assert.Equal(16L << 20, (await DaemonFixture.JsonAsync(clone)).GetProperty("sizeBytes").GetInt64());
        var bigger = await d.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "db-big", size = "32MiB", source = new { volume = "db", snapshot = "s" } }, Ct);
        Assert.Equal(32L << 20, (await DaemonFixture.JsonAsync(bigger)).GetProperty("sizeBytes").GetInt64());

        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "x", source = new { volume = "db", snapshot = "nope" } }, Ct), HttpStatusCode.NotFound, "source.snapshot");
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "x", source = new { volume = "nope", snapshot = "s" } }, Ct), HttpStatusCode.NotFound, "source.volume");
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "x", size = "8MiB", source = new { volume = "db", snapshot = "s" } }, Ct), HttpStatusCode.BadRequest, "size");
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes", new { name = "db-copy", source = new { volume = "db", snapshot = "s" } }, Ct), HttpStatusCode.Conflict, "name");
        // Deleting the source snapshot is handled safely: the clone keeps its blocks.
        Assert.Equal(HttpStatusCode.NoContent, (await d.Http.DeleteAsync("/api/v1/volumes/db/snapshots/s", Ct)).StatusCode);
        Assert.True((await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/db-copy", Ct))).GetProperty("available").GetBoolean());
    }

    [Fact]
    public async Task Revert_is_refused_while_a_client_is_connected_unless_forced_and_a_snapshot_exports_read_only()
    {
        await using var d = await DaemonFixture.StartAsync(realPools: true);
        await d.CreateAsync("db", "16MiB");
        await d.Http.PostAsJsonAsync("/api/v1/volumes/db/snapshots", new { name = "s" }, Ct);
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes/db/revert", new { snapshot = "nope" }, Ct), HttpStatusCode.NotFound, "snapshot");

        using var client = new TcpClient();
        await client.ConnectAsync(d.Daemon.NbdEndpoint, Ct);
        var (size, flags) = await AttachAsync(client.GetStream(), "db");
        Assert.Equal(16L << 20, size);
        Assert.Equal(0, flags & 2); // the volume itself is writable
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes/db/revert", new { snapshot = "s" }, Ct), HttpStatusCode.Conflict, null);
        Assert.Equal(HttpStatusCode.OK, (await d.Http.PostAsJsonAsync("/api/v1/volumes/db/revert", new { snapshot = "s", force = true }, Ct)).StatusCode);

        using var reader = new TcpClient();
        await reader.ConnectAsync(d.Daemon.NbdEndpoint, Ct);
        var (snapshotSize, snapshotFlags) = await AttachAsync(reader.GetStream(), "db@s");
        Assert.Equal(16L << 20, snapshotSize);
        Assert.Equal(2, snapshotFlags & 2); // NBD_FLAG_READ_ONLY
        await AssertProblem(await d.Http.DeleteAsync("/api/v1/volumes/db/snapshots/s", Ct), HttpStatusCode.Conflict, null);
        Assert.Equal(HttpStatusCode.NoContent, (await d.Http.DeleteAsync("/api/v1/volumes/db/snapshots/s?force=true", Ct)).StatusCode);
    }

    [Fact]
    public async Task A_scrub_runs_in_the_background_and_reports_its_result()
    {
        await using var d = await DaemonFixture.StartAsync(realPools: true);
        await d.CreateAsync("db", "16MiB");
        await AssertProblem(await d.Http.GetAsync("/api/v1/volumes/db/scrub", Ct), HttpStatusCode.NotFound, "name");
        await AssertProblem(await d.Http.PostAsJsonAsync("/api/v1/volumes/db/scrub", new { rate = "lots" }, Ct), HttpStatusCode.BadRequest, "rate");
        var started = await d.Http.PostAsync("/api/v1/volumes/db/scrub", null, Ct);
        Assert.Equal(HttpStatusCode.Accepted, started.StatusCode);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        JsonElement status;
        do
        {
            status = await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/db/scrub", Ct));
        }
        while (status.GetProperty("state").GetString() == "Running" && DateTime.UtcNow < deadline && await Delay());
        Assert.Equal("Finished", status.GetProperty("state").GetString());
        Assert.Equal(0, status.GetProperty("errorCount").GetInt64());
    }

    private static async Task<bool> Delay()
    {
        await Task.Delay(50, Ct);
        return true;
    }

    private static async Task AssertProblem(HttpResponseMessage response, HttpStatusCode status, string? field)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await DaemonFixture.JsonAsync(response);
        if (field is not null)
        {
            Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), $"problem names no field '{field}': {problem}");
        }
    }

    /// <summary>Fixed-newstyle handshake with NBD_OPT_EXPORT_NAME; returns the export's size and transmission flags.</summary>
    private static async Task<(long Size, int Flags)> AttachAsync(NetworkStream stream, string export)
    {
        var hello = new byte[18];
        await stream.ReadExactlyAsync(hello, Ct);
        var name = Encoding.UTF8.GetBytes(export);
        var request = new byte[4 + 16 + name.Length];
        BinaryPrimitives.WriteUInt32BigEndian(request, 3);
        Encoding.ASCII.GetBytes("IHAVEOPT").CopyTo(request, 4);
        BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(12), 1);
        BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(16), (uint)name.Length);
        name.CopyTo(request, 20);
        await stream.WriteAsync(request, Ct);
        var reply = new byte[10];
        await stream.ReadExactlyAsync(reply, Ct);
        return ((long)BinaryPrimitives.ReadUInt64BigEndian(reply), BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8)));
    }
}

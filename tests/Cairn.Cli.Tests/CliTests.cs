using System.Text.Json;
using Cairn.Api.Tests;
using Cairn.Testing;

namespace Cairn.Cli.Tests;

/// <summary>Runs the CLI's real entry point in-process against a real in-process cairnd, reading what a user would see.</summary>
public sealed class CliTests : IAsyncLifetime
{
    private DaemonFixture _d = null!;

    public async ValueTask InitializeAsync() => _d = await DaemonFixture.StartAsync();

    public async ValueTask DisposeAsync() => await _d.DisposeAsync();

    private sealed record Run(int Exit, string Out, string Err)
    {
        public JsonElement Json => JsonDocument.Parse(Out).RootElement.Clone();
    }

    private Task<Run> Cairn(params string[] args) => CairnWithEnv(_d.Daemon.ApiAddress, args);

    private static async Task<Run> CairnWithEnv(string? cairnApi, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await CairnCli.RunAsync(args, stdout, stderr, name => name == "CAIRN_API" ? cairnApi : null);
        return new Run(exit, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Every failure: non-zero exit, exactly one line "cairn: ..." on stderr, nothing on stdout.</summary>
    private static void AssertFails(Run run, int exit, string reason)
    {
        Assert.Equal(exit, run.Exit);
        Assert.Equal("", run.Out);
        var lines = run.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("cairn: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(reason, lines[0], StringComparison.Ordinal);
    }

    private static void AssertSucceeds(Run run)
    {
        Assert.True(run.Exit == 0, $"exit {run.Exit}: {run.Err}");
        Assert.Equal("", run.Err);
    }

    [Fact]
    public async Task Create_prints_the_new_volume()
    {
        var run = await Cairn("volume", "create", "vol1", "--size", "10GiB");
        AssertSucceeds(run);
        Assert.Contains("Created volume 'vol1' (10 GiB) on node 'node1' in pool 'default'.", run.Out, StringComparison.Ordinal);
        Assert.Contains($"nbd://127.0.0.1:{_d.Daemon.NbdEndpoint.Port}/vol1", run.Out, StringComparison.Ordinal);
        Assert.Contains("10737418240 bytes", run.Out, StringComparison.Ordinal);
        Assert.Contains("node1", run.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_dry_run_explains_the_placement_and_creates_nothing()
    {
        var plan = await Cairn("volume", "create", "planned", "--size", "10GiB", "--dry-run", "--explain");
        AssertSucceeds(plan);
        Assert.Contains("Volume 'planned' (10 GiB, 1 replica, spread by node (required)) would go to: node1/default (zone default, rack default).", plan.Out, StringComparison.Ordinal);
        var row = plan.Out.Split('\n').Single(l => l.TrimStart().StartsWith("node1", StringComparison.Ordinal));
        Assert.Contains("chosen", row, StringComparison.Ordinal);
        Assert.Contains("replica 0: pool default", row, StringComparison.Ordinal);
        Assert.Contains("No volumes", (await Cairn("volume", "list")).Out, StringComparison.Ordinal);

        var json = await Cairn("volume", "create", "planned", "--size", "10GiB", "--dry-run", "--json");
        AssertSucceeds(json);
        Assert.Equal("node1", json.Json.GetProperty("replicas")[0].GetProperty("node").GetString());

        AssertFails(await Cairn("volume", "create", "planned", "--size", "10GiB", "--replicas", "2", "--dry-run"), 1,
            "cannot place volume 'planned': 2 replicas need 2 eligible nodes; there is 1 (node1)");
        AssertFails(await Cairn("volume", "create", "planned", "--size", "10GiB", "--spread", "region"), 1, "spread 'region' is not one of node, rack, zone");
    }

    [Fact]
    public async Task Create_explain_shows_the_placement_then_creates()
    {
        var run = await Cairn("volume", "create", "vol1", "--size", "1GiB", "--explain", "--node", "node1", "--pool", "default");
        AssertSucceeds(run);
        Assert.Contains("would go to: node1/default", run.Out, StringComparison.Ordinal);
        Assert.Contains("Created volume 'vol1' (1 GiB) on node 'node1' in pool 'default'.", run.Out, StringComparison.Ordinal);
        Assert.Contains("1 replica, spread by node (required)", (await Cairn("volume", "show", "vol1")).Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_with_json_prints_the_api_json()
    {
        var run = await Cairn("volume", "create", "vol1", "--size", "536870912", "--json");
        AssertSucceeds(run);
        Assert.Equal(536870912, run.Json.GetProperty("sizeBytes").GetInt64());
        Assert.Equal("512 MiB", run.Json.GetProperty("size").GetString());
    }

    [Fact]
    public async Task List_prints_a_table_and_json()
    {
        Assert.Equal(0, (await Cairn("volume", "list")).Exit);
        Assert.Contains("No volumes", (await Cairn("volume", "list")).Out, StringComparison.Ordinal);
        await Cairn("volume", "create", "alpha", "--size", "1GiB");
        await Cairn("volume", "create", "beta", "--size", "2GiB");

        var table = await Cairn("volume", "list");
        AssertSucceeds(table);
        var header = table.Out.Split('\n').First(l => l.Contains("NAME", StringComparison.Ordinal));
        foreach (var column in new[] { "SIZE", "ALLOCATED", "NODE", "POOL", "CLIENTS", "EXPORT" })
        {
            Assert.Contains(column, header, StringComparison.Ordinal);
        }
        Assert.Contains(table.Out.Split('\n'), l => l.Contains("alpha", StringComparison.Ordinal) && l.Contains("1 GiB", StringComparison.Ordinal));
        Assert.Contains(table.Out.Split('\n'), l => l.Contains("beta", StringComparison.Ordinal) && l.Contains("2 GiB", StringComparison.Ordinal));

        var json = await Cairn("volume", "list", "--json");
        AssertSucceeds(json);
        Assert.Equal(["alpha", "beta"], json.Json.GetProperty("volumes").EnumerateArray().Select(v => v.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task Show_prints_size_allocation_export_and_clients()
    {
        await Cairn("volume", "create", "v", "--size", "1GiB");
        using var session = _d.Daemon.Volumes.TryOpen("v", "192.0.2.7:51000");
        var run = await Cairn("volume", "show", "v");
        AssertSucceeds(run);
        foreach (var expected in new[] { "Size", "1 GiB", "Allocated", "0 B", "Export", $"nbd://127.0.0.1:{_d.Daemon.NbdEndpoint.Port}/v", "Clients", "192.0.2.7:51000" })
        {
            Assert.Contains(expected, run.Out, StringComparison.Ordinal);
        }
        var json = await Cairn("volume", "show", "v", "--json");
        Assert.Equal("192.0.2.7:51000", json.Json.GetProperty("clients")[0].GetProperty("client").GetString());
    }

    [Fact]
    public async Task Grow_reports_the_new_size()
    {
        await Cairn("volume", "create", "v", "--size", "1GiB");
        var run = await Cairn("volume", "grow", "v", "--size", "20GiB");
        AssertSucceeds(run);
        Assert.Contains("Volume 'v' is now 20 GiB.", run.Out, StringComparison.Ordinal);
        var json = await Cairn("volume", "grow", "v", "--size", "21GiB", "--json");
        Assert.Equal(21L << 30, json.Json.GetProperty("sizeBytes").GetInt64());
    }

    [Fact]
    public async Task Delete_removes_the_volume_and_json_says_so()
    {
        await Cairn("volume", "create", "a", "--size", "1GiB");
        await Cairn("volume", "create", "b", "--size", "1GiB");
        var run = await Cairn("volume", "delete", "a");
        AssertSucceeds(run);
        Assert.Contains("Deleted volume 'a'.", run.Out, StringComparison.Ordinal);
        var json = await Cairn("volume", "delete", "b", "--json");
        AssertSucceeds(json);
        Assert.True(json.Json.GetProperty("deleted").GetBoolean());
        Assert.Empty(_d.Daemon.Volumes.List());
    }

    [Fact]
    public async Task Delete_while_connected_fails_until_forced()
    {
        await Cairn("volume", "create", "v", "--size", "1GiB");
        using var session = _d.Daemon.Volumes.TryOpen("v", "192.0.2.7:51000")!;
        AssertFails(await Cairn("volume", "delete", "v"), 1, "connected client");
        AssertSucceeds(await Cairn("volume", "delete", "v", "--force"));
        Assert.True(session.Revoked.IsCancellationRequested);
    }

    [Fact]
    public async Task Pool_list_prints_capacity_used_and_free()
    {
        var run = await Cairn("pool", "list");
        AssertSucceeds(run);
        var header = run.Out.Split('\n').First(l => l.Contains("NAME", StringComparison.Ordinal));
        foreach (var column in new[] { "CAPACITY", "USED", "FREE", "VOLUMES" })
        {
            Assert.Contains(column, header, StringComparison.Ordinal);
        }
        Assert.Contains(run.Out.Split('\n'), l => l.Contains("default", StringComparison.Ordinal) && l.Contains("100 GiB", StringComparison.Ordinal));
        var json = await Cairn("pool", "list", "--json");
        Assert.Equal(100L << 30, json.Json.GetProperty("pools")[0].GetProperty("freeBytes").GetInt64());
        Assert.DoesNotContain("failed", run.Out, StringComparison.OrdinalIgnoreCase);

        _d.Pool!.Fault = "metadata sync failed (EIO)";
        run = await Cairn("pool", "list");
        AssertSucceeds(run);
        Assert.Contains("Pool 'default' has failed: metadata sync failed (EIO)", run.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unknown_volume_fails_with_one_line_on_every_command()
    {
        AssertFails(await Cairn("volume", "show", "nope"), 1, "no volume named 'nope'");
        AssertFails(await Cairn("volume", "grow", "nope", "--size", "2GiB"), 1, "no volume named 'nope'");
        AssertFails(await Cairn("volume", "delete", "nope"), 1, "no volume named 'nope'");
        AssertFails(await Cairn("volume", "show", "nope", "--json"), 1, "no volume named 'nope'");
    }

    [Fact]
    public async Task Duplicate_bad_size_bad_name_and_shrink_fail_with_the_reason()
    {
        await Cairn("volume", "create", "v", "--size", "2GiB");
        AssertFails(await Cairn("volume", "create", "v", "--size", "1GiB"), 1, "a volume named 'v' already exists");
        AssertFails(await Cairn("volume", "create", "w", "--size", "lots"), 1, "'lots' is not a size");
        AssertFails(await Cairn("volume", "create", "w", "--size", "1000"), 1, "not a multiple of 512");
        AssertFails(await Cairn("volume", "create", "Bad_Name", "--size", "1GiB"), 1, "must start with a lowercase letter or a digit");
        AssertFails(await Cairn("volume", "grow", "v", "--size", "1GiB"), 1, "can only grow");
    }

    [Fact]
    public async Task Iscsi_access_sets_and_shows_the_policy_without_ever_printing_a_secret()
    {
        await Cairn("volume", "create", "lun", "--size", "1GiB");
        string dir = Directory.CreateTempSubdirectory("cairn-cli-").FullName;
        try
        {
            string secret = Path.Combine(dir, "chap"), mutual = Path.Combine(dir, "mutual"), shortSecret = Path.Combine(dir, "short");
            await File.WriteAllTextAsync(secret, "chap-secret-12\r\n");
            await File.WriteAllTextAsync(mutual, "target-secret-1\n");
            await File.WriteAllTextAsync(shortSecret, "abc\n");

            var set = await Cairn("volume", "iscsi-access", "lun", "--allow", "iqn.2026-11.test:a", "--allow", "iqn.2026-11.test:b",
                "--chap-user", "host", "--chap-secret-file", secret, "--mutual-chap-user", "cairn", "--mutual-chap-secret-file", mutual);
            AssertSucceeds(set);
            Assert.Contains("initiators: iqn.2026-11.test:a, iqn.2026-11.test:b; chap: enabled, user host; mutual chap: enabled, user cairn", set.Out, StringComparison.Ordinal);
            Assert.Contains("-n node.session.auth.username_in -v cairn", set.Out, StringComparison.Ordinal);
            var json = await Cairn("volume", "show", "lun", "--json");
            foreach (var text in new[] { set.Out, json.Out, (await Cairn("volume", "list", "--json")).Out })
            {
                Assert.DoesNotContain("chap-secret-12", text, StringComparison.Ordinal);
                Assert.DoesNotContain("target-secret-1", text, StringComparison.Ordinal);
            }
            Assert.Equal("host", json.Json.GetProperty("iscsi").GetProperty("access").GetProperty("chapUser").GetString());

            AssertFails(await Cairn("volume", "iscsi-access", "lun"), 1, "say who may log in");
            AssertFails(await Cairn("volume", "iscsi-access", "lun", "--open", "--allow", "iqn.2026-11.test:a"), 1, "--open lets everyone in");
            AssertFails(await Cairn("volume", "iscsi-access", "lun", "--chap-user", "host"), 1, "--chap-user and --chap-secret-file go together");
            AssertFails(await Cairn("volume", "iscsi-access", "lun", "--chap-user", "host", "--chap-secret-file", shortSecret), 1, "chap.secret must be 12-16 bytes");
            AssertFails(await Cairn("volume", "iscsi-access", "lun", "--allow", "host1"), 1, "allowedInitiators[0]: 'host1' is not an iSCSI name");
            AssertFails(await Cairn("volume", "iscsi-access", "nope", "--open"), 1, "no volume named 'nope'");
            // Refusals changed nothing.
            Assert.True((await Cairn("volume", "show", "lun", "--json")).Json.GetProperty("iscsi").GetProperty("access").GetProperty("mutualChap").GetBoolean());

            var open = await Cairn("volume", "iscsi-access", "lun", "--open");
            AssertSucceeds(open);
            Assert.Contains("initiators: any; chap: none", open.Out, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Unreachable_api_exits_2_and_says_so()
    {
        var run = await CairnWithEnv(null, "--api", "http://127.0.0.1:1", "volume", "list");
        AssertFails(run, 2, "cannot reach the Cairn API at http://127.0.0.1:1");
        Assert.Contains("(is cairnd running?)", run.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_api_url_comes_from_the_option_then_the_environment()
    {
        AssertSucceeds(await CairnWithEnv("http://127.0.0.1:1", "volume", "list", "--api", _d.Daemon.ApiAddress));
        AssertFails(await CairnWithEnv("http://127.0.0.1:1", "volume", "list"), 2, "http://127.0.0.1:1");
        AssertFails(await CairnWithEnv(null, "--api", "ftp://x", "volume", "list"), 1, "is not an http:// or https:// URL");
    }

    [Fact]
    public async Task Usage_errors_fail_with_one_line()
    {
        AssertFails(await Cairn("volume", "create", "v"), 1, "Option '--size' is required");
        AssertFails(await Cairn(), 1, "Required command was not provided");
        AssertFails(await Cairn("volume", "frobnicate"), 1, "frobnicate");
    }

    [Fact]
    public async Task Help_describes_every_command()
    {
        var root = await Cairn("--help");
        AssertSucceeds(root);
        Assert.Contains("volume", root.Out, StringComparison.Ordinal);
        Assert.Contains("pool", root.Out, StringComparison.Ordinal);
        Assert.Contains("--json", root.Out, StringComparison.Ordinal);
        var volume = await Cairn("volume", "--help");
        foreach (var command in new[] { "create", "list", "show", "grow", "delete", "iscsi-access" })
        {
            Assert.Contains(volume.Out.Split('\n'), l => l.TrimStart().StartsWith(command, StringComparison.Ordinal) && l.Trim().Length > command.Length + 4);
        }
        Assert.Contains("--force", (await Cairn("volume", "delete", "--help")).Out, StringComparison.Ordinal);
        var node = await Cairn("node", "--help");
        foreach (var command in new[] { "list", "show", "drain", "undrain" })
        {
            Assert.Contains(node.Out.Split('\n'), l => l.TrimStart().StartsWith(command, StringComparison.Ordinal) && l.Trim().Length > command.Length + 4);
        }
        Assert.Contains("status", (await Cairn("cluster", "--help")).Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Node_list_shows_this_node_Up_with_its_domains_and_pools()
    {
        var table = await Cairn("node", "list");
        AssertSucceeds(table);
        var lines = table.Out.Split('\n');
        var header = lines.First(l => l.Contains("NAME", StringComparison.Ordinal));
        foreach (var column in new[] { "STATE", "ZONE", "RACK", "ADDRESS", "LAST HEARTBEAT", "POOLS" })
        {
            Assert.Contains(column, header, StringComparison.Ordinal);
        }
        var row = lines.Single(l => l.TrimStart().StartsWith("node1", StringComparison.Ordinal));
        Assert.Contains(" Up ", row, StringComparison.Ordinal);
        Assert.Contains(_d.Daemon.ApiAddress, row, StringComparison.Ordinal);
        Assert.Contains("default 100 GiB / 100 GiB", row, StringComparison.Ordinal);

        var json = await Cairn("node", "list", "--json");
        AssertSucceeds(json);
        var node = Assert.Single(json.Json.GetProperty("nodes").EnumerateArray());
        Assert.Equal(("node1", "Up"), (node.GetProperty("name").GetString(), node.GetProperty("state").GetString()));

        var show = await Cairn("node", "show", "node1");
        AssertSucceeds(show);
        Assert.Contains($"nbd://127.0.0.1:{_d.Daemon.NbdEndpoint.Port}", show.Out, StringComparison.Ordinal);
        Assert.Contains("Last heartbeat", show.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Node_drain_and_undrain_round_trip()
    {
        var drain = await Cairn("node", "drain", "node1");
        AssertSucceeds(drain);
        Assert.Equal("Node 'node1' is draining (state Draining).", drain.Out.Trim());
        Assert.Contains(" Draining ", (await Cairn("node", "list")).Out, StringComparison.Ordinal);
        var undrain = await Cairn("node", "undrain", "node1", "--json");
        AssertSucceeds(undrain);
        Assert.Equal(("Up", false), (undrain.Json.GetProperty("state").GetString(), undrain.Json.GetProperty("draining").GetBoolean()));
        AssertFails(await Cairn("node", "drain", "ghost"), 1, "no node named 'ghost'");
        AssertFails(await Cairn("node", "show", "ghost"), 1, "no node named 'ghost'");
    }

    [Fact]
    public async Task Cluster_status_shows_the_store_this_node_and_the_controller()
    {
        await Eventually.HoldsAsync(() => _d.Daemon.IsController, TimeSpan.FromSeconds(10), "this node is elected controller");
        var status = await Cairn("cluster", "status");
        AssertSucceeds(status);
        Assert.Contains("embedded", status.Out, StringComparison.Ordinal);
        Assert.Contains("node1 (since", status.Out, StringComparison.Ordinal);
        Assert.Contains("1 up, 0 draining, 0 down", status.Out, StringComparison.Ordinal);
        var json = await Cairn("cluster", "status", "--json");
        Assert.Equal(("embedded", "node1"), (json.Json.GetProperty("store").GetString(), json.Json.GetProperty("thisNode").GetString()));
    }
}

using System.Text.Json;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>The real `cairn` binary against a real cairnd process: the user's path through every command.</summary>
public sealed class CliEndToEndTests
{
    [Fact]
    public async Task Volume_lifecycle_through_the_cli()
    {
        await using var cairn = await CairnDaemon.StartAsync();

        var created = (await cairn.CliAsync("volume", "create", "db1", "--size", "512MiB", "--json")).EnsureSuccess();
        using (var doc = JsonDocument.Parse(created.Stdout))
        {
            Assert.Equal("db1", doc.RootElement.GetProperty("name").GetString());
            Assert.Equal(512L << 20, doc.RootElement.GetProperty("sizeBytes").GetInt64());
        }

        var table = (await cairn.CliAsync("volume", "list")).EnsureSuccess();
        Assert.Contains("db1", table.Stdout, StringComparison.Ordinal);

        var show = (await cairn.CliAsync("volume", "show", "db1")).EnsureSuccess();
        Assert.Contains($"nbd://127.0.0.1:{cairn.NbdPort}/db1", show.Stdout, StringComparison.Ordinal);

        (await cairn.CliAsync("volume", "grow", "db1", "--size", "1GiB")).EnsureSuccess();
        var grown = (await cairn.CliAsync("volume", "show", "db1", "--json")).EnsureSuccess();
        using (var doc = JsonDocument.Parse(grown.Stdout))
        {
            Assert.Equal(1L << 30, doc.RootElement.GetProperty("sizeBytes").GetInt64());
        }

        var pools = (await cairn.CliAsync("pool", "list", "--json")).EnsureSuccess();
        using (var doc = JsonDocument.Parse(pools.Stdout))
        {
            var pool = doc.RootElement.GetProperty("pools").EnumerateArray().Single();
            Assert.True(pool.GetProperty("capacityBytes").GetInt64() > 0);
        }

        (await cairn.CliAsync("volume", "delete", "db1")).EnsureSuccess();
        var gone = await cairn.CliAsync("volume", "show", "db1");
        Assert.NotEqual(0, gone.ExitCode);
        Assert.StartsWith("cairn: ", gone.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Errors_exit_non_zero_with_one_line_reasons()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "dup", "--size", "1GiB")).EnsureSuccess();

        await AssertFailsAsync(cairn.CliAsync("volume", "create", "dup", "--size", "1GiB"), "exists");
        await AssertFailsAsync(cairn.CliAsync("volume", "create", "x1", "--size", "lots"), "size");
        await AssertFailsAsync(cairn.CliAsync("volume", "show", "nope"), "nope");
        await AssertFailsAsync(cairn.CliAsync("volume", "grow", "dup", "--size", "512MiB"), "shrink");
        await AssertFailsAsync(cairn.CliAsync("volume", "create", "Bad Name!", "--size", "1GiB"), "name");
        var unreachable = await ToolRun.RunAsync(RepoPaths.Cli, ["--api", "http://127.0.0.1:1", "volume", "list"], TimeSpan.FromSeconds(60));
        Assert.Equal(2, unreachable.ExitCode);
        Assert.Contains("cannot reach", unreachable.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Delete_is_refused_while_a_client_is_attached_unless_forced()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "busy", "--size", "64MiB")).EnsureSuccess();
        using var client = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "busy");

        await AssertFailsAsync(cairn.CliAsync("volume", "delete", "busy"), "connected");
        (await cairn.CliAsync("volume", "delete", "busy", "--force")).EnsureSuccess();
        Assert.ThrowsAny<Exception>(() =>
        {
            // The forced delete revoked the session: the connection is closed under the client (30 s at most).
            for (int i = 0; i < 300; i++)
            {
                client.Read(0, new byte[4096]);
                Thread.Sleep(100);
            }
        });
    }

    [Fact]
    public async Task Volumes_and_data_survive_a_clean_restart()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "keep", "--size", "64MiB")).EnsureSuccess();
        var data = new byte[1 << 20];
        new Random(3).NextBytes(data);
        using (var c = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "keep"))
        {
            c.Write(3 << 20, data);
        }
        await cairn.StopAsync();
        Assert.Equal(0, cairn.ExitCode);
        await cairn.RestartAsync();
        using var reader = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "keep");
        var back = new byte[data.Length];
        reader.Read(3 << 20, back);
        Assert.Equal(data, back);
    }

    private static async Task AssertFailsAsync(Task<ToolResult> run, string reasonFragment)
    {
        var result = await run;
        Assert.True(result.ExitCode != 0, $"{result.Command} succeeded but should fail");
        var lines = result.Stderr.Trim().Split('\n');
        Assert.Single(lines);
        Assert.StartsWith("cairn: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(reasonFragment, lines[0], StringComparison.OrdinalIgnoreCase);
    }
}

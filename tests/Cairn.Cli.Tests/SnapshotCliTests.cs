using Cairn.Api.Tests;

namespace Cairn.Cli.Tests;

/// <summary>cairn snapshot / volume clone / revert / scrub against a real in-process cairnd on real pools.</summary>
public sealed class SnapshotCliTests : IAsyncLifetime
{
    private DaemonFixture _d = null!;

    public async ValueTask InitializeAsync() => _d = await DaemonFixture.StartAsync(realPools: true);

    public async ValueTask DisposeAsync() => await _d.DisposeAsync();

    private async Task<(int Exit, string Out, string Err)> Cairn(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = await CairnCli.RunAsync(args, stdout, stderr, name => name == "CAIRN_API" ? _d.Daemon.ApiAddress : null);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    private async Task<string> Succeeds(params string[] args)
    {
        var (exit, stdout, stderr) = await Cairn(args);
        Assert.True(exit == 0, $"cairn {string.Join(' ', args)}: exit {exit}: {stderr}");
        Assert.Equal("", stderr);
        return stdout;
    }

    [Fact]
    public async Task Snapshot_create_list_delete_and_clone_revert_print_what_happened()
    {
        await Succeeds("volume", "create", "db", "--size", "16MiB");
        Assert.Contains("Took snapshot 'monday' of volume 'db' (16 MiB)", await Succeeds("snapshot", "create", "db", "monday"), StringComparison.Ordinal);
        Assert.Contains("/db@monday", await Succeeds("snapshot", "create", "db", "tuesday") + await Succeeds("snapshot", "list", "db"), StringComparison.Ordinal);
        var list = await Succeeds("snapshot", "list", "db");
        Assert.Contains("EXCLUSIVE", list, StringComparison.Ordinal);
        Assert.True(list.IndexOf("monday", StringComparison.Ordinal) < list.IndexOf("tuesday", StringComparison.Ordinal), list);

        Assert.Contains("Cloned 'db@monday' as volume 'db-copy' (16 MiB).", await Succeeds("volume", "clone", "db@monday", "db-copy"), StringComparison.Ordinal);
        Assert.Contains("Reverted volume 'db' to snapshot 'monday'.", await Succeeds("volume", "revert", "db", "monday"), StringComparison.Ordinal);
        Assert.Contains("Deleted snapshot 'monday' of volume 'db'.", await Succeeds("snapshot", "delete", "db", "monday"), StringComparison.Ordinal);
        Assert.DoesNotContain("monday", await Succeeds("snapshot", "list", "db"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Mistakes_get_one_clear_line_and_a_failing_exit()
    {
        await Succeeds("volume", "create", "db", "--size", "16MiB");
        await Succeeds("snapshot", "create", "db", "s");
        var (exit, stdout, stderr) = await Cairn("snapshot", "create", "db", "s");
        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Contains("already has a snapshot named 's'", stderr, StringComparison.Ordinal);
        (exit, _, stderr) = await Cairn("snapshot", "delete", "db", "nope");
        Assert.Equal(1, exit);
        Assert.Contains("no snapshot named 'nope'", stderr, StringComparison.Ordinal);
        (exit, _, stderr) = await Cairn("volume", "clone", "db", "copy");
        Assert.Equal(1, exit);
        Assert.Contains("must be VOLUME@SNAPSHOT", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Scrub_follows_the_job_to_its_result()
    {
        await Succeeds("volume", "create", "db", "--size", "16MiB");
        await Succeeds("snapshot", "create", "db", "s");
        var output = await Succeeds("volume", "scrub", "db");
        Assert.Contains("Scrubbed volume 'db' and its snapshots: 0 blocks verified", output, StringComparison.Ordinal);
        Assert.Contains("0 bad.", await Succeeds("volume", "scrub-status", "db"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bad_block_that_cannot_be_repaired_is_shown_with_why_and_fails_the_scrub_with_exit_3()
    {
        await Succeeds("volume", "create", "db", "--size", "16MiB");
        byte[] content = new byte[4096];
        new Random(42).NextBytes(content);
        using (var session = _d.Daemon.Volumes.TryOpen("db", "test")!)
        {
            await session.Device.WriteAsync(8192, content);
            await session.Device.FlushAsync();
        }
        Assert.Equal(1, Testing.DataFileCorruption.CorruptBlock(Path.Combine(_d.DataDir, "pools", "default"), content));

        var (exit, stdout, stderr) = await Cairn("volume", "scrub", "db");

        Assert.Equal(3, exit);
        Assert.Contains("1 blocks verified", stdout, StringComparison.Ordinal);
        Assert.Contains("1 bad: 0 repaired from good copies, 1 unrecoverable.", stdout, StringComparison.Ordinal);
        Assert.Contains("found 1 bad blocks and could not repair 1 of them (see REPAIR)", stderr, StringComparison.Ordinal);
        var (_, json, _) = await Cairn("--json", "volume", "scrub-status", "db");
        var error = System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("errors")[0];
        Assert.Equal((8192L, "unrecoverable: the volume has a single copy"), (error.GetProperty("offsetBytes").GetInt64(), error.GetProperty("repair").GetString()));
    }
}

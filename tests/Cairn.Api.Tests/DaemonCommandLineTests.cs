using System.Net;
using Cairn.Daemon;

namespace Cairn.Api.Tests;

/// <summary>cairnd's real entry point, flags and stdout contract, run in-process.</summary>
public sealed class DaemonCommandLineTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-cmd-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    [Fact]
    public async Task Starts_on_ephemeral_ports_announces_them_serves_and_stops_cleanly()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        using var stop = new CancellationTokenSource();
        string pool = Path.Combine(_dir, "pools", "fast");
        var run = DaemonCommandLine.RunAsync(
            ["--data-dir", _dir, "--pool", pool + ":1GiB", "--api-listen", "http://127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--iscsi-listen", "127.0.0.1:0", "--advertise-host", "storage.example"],
            TextWriter.Synchronized(stdout), TextWriter.Synchronized(stderr), stop.Token);

        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!stdout.ToString().Contains("cairnd: ready", StringComparison.Ordinal))
        {
            Assert.False(run.IsCompleted, $"cairnd exited early: {stderr}");
            Assert.True(DateTime.UtcNow < deadline, "cairnd did not become ready");
            await Task.Delay(50);
        }
        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Matches(@"^cairnd: api listening on http://127\.0\.0\.1:\d+$", lines[0]);
        Assert.Matches(@"^cairnd: nbd listening on 127\.0\.0\.1:\d+$", lines[1]);
        Assert.Matches(@"^cairnd: iscsi listening on 127\.0\.0\.1:\d+$", lines[2]);
        Assert.Equal("cairnd: ready", lines[3]);

        string api = lines[0]["cairnd: api listening on ".Length..];
        int nbdPort = int.Parse(lines[1].Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture);
        using (var http = new HttpClient { BaseAddress = new Uri(api) })
        {
            var created = await http.PostAsync("/api/v1/volumes", new StringContent("{\"name\":\"v\",\"size\":\"1MiB\"}", System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            var volume = await DaemonFixture.JsonAsync(created);
            Assert.Equal($"nbd://storage.example:{nbdPort}/v", volume.GetProperty("export").GetString());
            var pools = await DaemonFixture.JsonAsync(await http.GetAsync("/api/v1/pools"));
            Assert.Equal(("fast", 1L << 30), (pools.GetProperty("pools")[0].GetProperty("name").GetString(), pools.GetProperty("pools")[0].GetProperty("capacityBytes").GetInt64()));
        }

        stop.Cancel();
        Assert.Equal(0, await run);
        Assert.True(File.Exists(Path.Combine(_dir, "cluster-store", "store.log")));
    }

    [Theory]
    [InlineData("--pool", "/x:lots", "--pool '/x:lots': 'lots' is not a size")]
    [InlineData("--nbd-listen", "nowhere", "--nbd-listen 'nowhere' is not ADDR:PORT")]
    [InlineData("--api-listen", "ftp://x", "--api-listen 'ftp://x' is not an http:// URL")]
    [InlineData("--bogus", "1", "Unrecognized command or argument '--bogus'")]
    [InlineData("--cluster", "/some/dir", "--cluster '/some/dir' is not etcd://HOST:PORT")]
    [InlineData("--cluster", "etcd://", "names no etcd endpoint")]
    [InlineData("--node", "Node_A", "--node 'Node_A': node name 'Node_A' must start with a lowercase letter")]
    [InlineData("--zone", "a b", "zone name 'a b' contains ' '")]
    [InlineData("--lease-ttl", "0.1", "--lease-ttl 0.1 is out of range")]
    [InlineData("--io-threads", "-1", "--io-threads must be from 1 to 1024 (or 0 for one per core), not -1")]
    [InlineData("--io-threads", "5000", "--io-threads must be from 1 to 1024 (or 0 for one per core), not 5000")]
    public async Task Bad_flags_fail_with_one_line_and_exit_1(string flag, string value, string reason)
    {
        var stderr = new StringWriter();
        int exit = await DaemonCommandLine.RunAsync([flag, value, "--data-dir", _dir], new StringWriter(), stderr);
        Assert.Equal(1, exit);
        var line = Assert.Single(stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("cairnd: ", line, StringComparison.Ordinal);
        Assert.Contains(reason, line, StringComparison.Ordinal);
    }
}

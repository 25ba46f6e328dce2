using System.Net;
using System.Net.Http.Json;
using Cairn.Daemon;
using Microsoft.Extensions.Logging;

namespace Cairn.Api.Tests;

public sealed class ScrubScheduleTests
{
    [Theory]
    [InlineData("90s", 90)]
    [InlineData("30m", 1800)]
    [InlineData("24h", 86400)]
    [InlineData("7d", 604800)]
    public void Scrub_intervals_parse_with_units(string text, double seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), ScrubScheduler.ParseInterval(text));

    [Fact]
    public void Bad_scrub_flags_are_refused_with_the_flag_named()
    {
        Assert.Null(ScrubScheduler.ParseInterval("off"));
        Assert.Contains("--scrub-interval", Assert.Throws<FormatException>(() => ScrubScheduler.ParseInterval("7 weeks")).Message, StringComparison.Ordinal);
        Assert.Contains("unit 'w'", Assert.Throws<FormatException>(() => ScrubScheduler.ParseInterval("2w")).Message, StringComparison.Ordinal);
        Assert.Contains("--scrub-rate", Assert.Throws<FormatException>(() => ScrubScheduler.ParseRate("fast")).Message, StringComparison.Ordinal);
        Assert.Equal(10L << 20, ScrubScheduler.ParseRate("10MiB"));
    }

    [Fact]
    public async Task A_scheduled_scrub_covers_every_volume_without_being_asked()
    {
        var ct = TestContext.Current.CancellationToken;
        string dataDir = Path.Combine(Path.GetTempPath(), "cairn-scrub-" + Guid.NewGuid().ToString("N"));
        try
        {
            await using var daemon = await CairnDaemon.StartAsync(new DaemonOptions
            {
                DataDirectory = dataDir,
                ApiListen = "http://127.0.0.1:0",
                NbdListen = new IPEndPoint(IPAddress.Loopback, 0),
                IscsiListen = new IPEndPoint(IPAddress.Loopback, 0),
                Announce = TextWriter.Null,
                MinimumLogLevel = LogLevel.Warning,
                NodeName = "node1",
                ScrubInterval = TimeSpan.FromMilliseconds(200),
            }, ct);
            using var http = new HttpClient { BaseAddress = new Uri(daemon.ApiAddress) };
            Assert.Equal(HttpStatusCode.Created, (await http.PostAsJsonAsync("/api/v1/volumes", new { name = "a", size = "8MiB" }, ct)).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await http.PostAsJsonAsync("/api/v1/volumes", new { name = "b", size = "8MiB" }, ct)).StatusCode);
            var deadline = DateTime.UtcNow.AddSeconds(60);
            foreach (var volume in new[] { "a", "b" })
            {
                HttpResponseMessage response;
                while ((response = await http.GetAsync($"/api/v1/volumes/{volume}/scrub", ct)).StatusCode != HttpStatusCode.OK || (await DaemonFixture.JsonAsync(response)).GetProperty("state").GetString() != "Finished")
                {
                    Assert.True(DateTime.UtcNow < deadline, $"no scheduled scrub of '{volume}' finished within 60 s");
                    await Task.Delay(100, ct);
                }
            }
        }
        finally
        {
            if (Directory.Exists(dataDir))
            {
                Directory.Delete(dataDir, recursive: true);
            }
        }
    }
}

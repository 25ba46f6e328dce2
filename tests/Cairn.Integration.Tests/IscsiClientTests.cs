using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>libiscsi's tools and qemu-img against the iSCSI target of a real cairnd.</summary>
public sealed class IscsiClientTests
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task Every_volume_is_a_discoverable_target_that_round_trips_data_and_agrees_with_nbd()
    {
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "lun-a", "--size", "64MiB")).EnsureSuccess();
        (await cairn.CliAsync("volume", "create", "lun-b", "--size", "32MiB")).EnsureSuccess();
        var portal = $"iscsi://127.0.0.1:{cairn.IscsiPort}";

        // The API and CLI tell the user where the target is and how to log in.
        var show = (await cairn.CliAsync("volume", "show", "lun-a", "--json")).EnsureSuccess();
        using (var doc = System.Text.Json.JsonDocument.Parse(show.Stdout))
        {
            var iscsi = doc.RootElement.GetProperty("iscsi");
            Assert.Equal($"127.0.0.1:{cairn.IscsiPort}", iscsi.GetProperty("portal").GetString());
            Assert.Equal("iqn.2026-11.io.cairn:lun-a", iscsi.GetProperty("target").GetString());
            Assert.Equal(0, iscsi.GetProperty("lun").GetInt32());
        }
        var table = (await cairn.CliAsync("volume", "show", "lun-a")).EnsureSuccess();
        Assert.Contains($"iscsiadm -m node -T iqn.2026-11.io.cairn:lun-a -p 127.0.0.1:{cairn.IscsiPort} --login", table.Stdout, StringComparison.Ordinal);

        var discovery = (await ToolRun.RunAsync("iscsi-ls", ["-s", portal], ToolTimeout)).EnsureSuccess();
        Assert.Contains("iqn.2026-11.io.cairn:lun-a", discovery.Stdout, StringComparison.Ordinal);
        Assert.Contains("iqn.2026-11.io.cairn:lun-b", discovery.Stdout, StringComparison.Ordinal);

        var image = tmp.File("lun.raw");
        var bytes = new byte[64 << 20];
        new Random(11).NextBytes(bytes.AsSpan(0, 5 << 20));
        new Random(12).NextBytes(bytes.AsSpan(40 << 20, 1 << 20));
        await File.WriteAllBytesAsync(image, bytes);
        var lun = $"{portal}/iqn.2026-11.io.cairn:lun-a/0";
        (await ToolRun.RunAsync("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", image, lun], ToolTimeout)).EnsureSuccess();
        var compare = (await ToolRun.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, lun], ToolTimeout)).EnsureSuccess();
        Assert.Contains("Images are identical", compare.Stdout, StringComparison.Ordinal);

        // The same volume read over NBD holds what iSCSI wrote: one volume, two protocols.
        using var nbd = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "lun-a");
        var back = new byte[1 << 20];
        nbd.Read(40 << 20, back);
        Assert.True(bytes.AsSpan(40 << 20, 1 << 20).SequenceEqual(back), "NBD reads different bytes than iSCSI wrote");
    }

    [Fact]
    public async Task Iscsi_test_cu_against_a_real_volume_passes_every_test_tgt_passes()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "conformance", "--size", "64MiB")).EnsureSuccess();
        var allow = IscsiConformance.TestInitiators.SelectMany(name => new[] { "--allow", name });
        (await cairn.CliAsync(["volume", "iscsi-access", "conformance", .. allow])).EnsureSuccess();
        await IscsiConformance.RunAndCheckAsync($"iscsi://127.0.0.1:{cairn.IscsiPort}/iqn.2026-11.io.cairn:conformance/0", "cairnd");
    }

    [Fact]
    public async Task Access_policy_set_through_the_cli_admits_only_allowed_initiators_with_the_chap_secret_and_survives_a_restart()
    {
        const string Secret = "s3cret-for-lun";
        const string Allowed = "iqn.2026-11.test:allowed-host";
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "guarded", "--size", "16MiB")).EnsureSuccess();
        var secretFile = tmp.File("chap-secret");
        await File.WriteAllTextAsync(secretFile, Secret + "\n");

        var set = (await cairn.CliAsync("volume", "iscsi-access", "guarded", "--allow", Allowed, "--chap-user", "host1", "--chap-secret-file", secretFile)).EnsureSuccess();
        Assert.Contains("chap: enabled, user host1", set.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain(Secret, set.Stdout, StringComparison.Ordinal);

        await AssertGuardedAsync(cairn, Secret, Allowed);
        await cairn.RestartAsync(); // the policy lives in the volume's spec in the store, not in the process
        await AssertGuardedAsync(cairn, Secret, Allowed);

        // A secret RFC 3720 calls too short is refused with the field named, and nothing changes.
        await File.WriteAllTextAsync(secretFile, "short");
        var refused = await cairn.CliAsync("volume", "iscsi-access", "guarded", "--chap-user", "host1", "--chap-secret-file", secretFile);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("chap.secret must be 12-16 bytes", refused.Stderr, StringComparison.Ordinal);
        using var http = new HttpClient();
        using var response = await http.PutAsync($"{cairn.ApiUrl}/api/v1/volumes/guarded/iscsi-access",
            new StringContent("{\"chap\": {\"user\": \"u\", \"secret\": \"short\"}}", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
        using (var problem = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
        {
            Assert.True(problem.RootElement.GetProperty("errors").TryGetProperty("chap.secret", out _), problem.RootElement.ToString());
        }
        await AssertGuardedAsync(cairn, Secret, Allowed);

        (await cairn.CliAsync("volume", "iscsi-access", "guarded", "--open")).EnsureSuccess();
        var open = await ToolRun.RunAsync("iscsi-inq", ["-i", "iqn.2026-11.test:anyone", $"iscsi://127.0.0.1:{cairn.IscsiPort}/iqn.2026-11.io.cairn:guarded/0"], ToolTimeout);
        Assert.True(open.ExitCode == 0, open.Stderr);
    }

    private static async Task AssertGuardedAsync(CairnDaemon cairn, string secret, string allowed)
    {
        var show = (await cairn.CliAsync("volume", "show", "guarded", "--json")).EnsureSuccess();
        Assert.DoesNotContain(secret, show.Stdout, StringComparison.Ordinal);
        using (var doc = System.Text.Json.JsonDocument.Parse(show.Stdout))
        {
            var iscsi = doc.RootElement.GetProperty("iscsi");
            var access = iscsi.GetProperty("access");
            Assert.Equal(allowed, access.GetProperty("allowedInitiators")[0].GetString());
            Assert.True(access.GetProperty("chap").GetBoolean());
            Assert.Equal("host1", access.GetProperty("chapUser").GetString());
            var login = iscsi.GetProperty("login").EnumerateArray().Select(l => l.GetString()).ToList();
            Assert.Contains(login, l => l!.EndsWith("-n node.session.auth.authmethod -v CHAP", StringComparison.Ordinal));
            Assert.EndsWith("--login", login[^1], StringComparison.Ordinal);
        }

        string target = $"127.0.0.1:{cairn.IscsiPort}/iqn.2026-11.io.cairn:guarded/0";
        var ok = await ToolRun.RunAsync("iscsi-inq", ["-i", allowed, $"iscsi://host1%{secret}@{target}"], ToolTimeout);
        Assert.True(ok.ExitCode == 0, ok.Stderr + ok.Stdout);
        var stranger = await ToolRun.RunAsync("iscsi-inq", ["-i", "iqn.2026-11.test:stranger", $"iscsi://host1%{secret}@{target}"], ToolTimeout);
        Assert.NotEqual(0, stranger.ExitCode);
        var wrongSecret = await ToolRun.RunAsync("iscsi-inq", ["-i", allowed, $"iscsi://host1%wrong-secret-99@{target}"], ToolTimeout);
        Assert.NotEqual(0, wrongSecret.ExitCode);
        Assert.Contains("authentication failure", wrongSecret.Stderr + wrongSecret.Stdout, StringComparison.OrdinalIgnoreCase);
    }
}

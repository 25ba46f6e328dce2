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
}

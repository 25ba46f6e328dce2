using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>Snapshots, clones and snapshot deletion seen through Debian's real NBD clients (nbdcopy, nbdinfo) against a real cairnd.</summary>
public sealed class SnapshotClientTests
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(3);
    private const int MiB = 1 << 20;
    private const int VolumeBytes = 32 * MiB;

    [Fact]
    public async Task A_snapshot_export_reads_what_was_written_before_it_while_writes_go_on()
    {
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "db", "--size", "32MiB")).EnsureSuccess();
        var before = Content(1);
        await CopyInAsync(tmp, before, cairn.NbdUri("db"));
        (await cairn.CliAsync("snapshot", "create", "db", "s1")).EnsureSuccess();

        using var stop = new CancellationTokenSource();
        long written = 0;
        var writer = Task.Run(() =>
        {
            using var client = MiniNbdClient.ConnectAsync(cairn.NbdPort, "db").GetAwaiter().GetResult();
            var random = new Random(5);
            var block = new byte[64 * 1024];
            while (!stop.IsCancellationRequested)
            {
                random.NextBytes(block);
                client.Write(random.Next(VolumeBytes / block.Length) * (long)block.Length, block);
                Interlocked.Increment(ref written);
            }
            client.Flush();
        });
        try
        {
            var list = (await ToolRun.RunAsync("nbdinfo", ["--list", $"nbd://127.0.0.1:{cairn.NbdPort}"], ToolTimeout)).EnsureSuccess();
            Assert.Contains("export=\"db@s1\"", list.Stdout, StringComparison.Ordinal);
            var info = (await ToolRun.RunAsync("nbdinfo", [cairn.NbdUri("db@s1")], ToolTimeout)).EnsureSuccess();
            Assert.Contains("is_read_only: true", info.Stdout, StringComparison.Ordinal);
            Assert.Equal(before, await CopyOutAsync(tmp, cairn.NbdUri("db@s1")));
        }
        finally
        {
            await stop.CancelAsync();
            await writer;
        }
        Assert.True(Interlocked.Read(ref written) > 0, "the writer never wrote while the snapshot was copied");
        Assert.NotEqual(before, await CopyOutAsync(tmp, cairn.NbdUri("db"))); // the volume did move on
        var refused = await ToolRun.RunAsync("nbdcopy", [tmp.File("in.img"), cairn.NbdUri("db@s1")], ToolTimeout);
        Assert.NotEqual(0, refused.ExitCode); // a snapshot export takes no writes
    }

    [Fact]
    public async Task A_clone_starts_as_its_snapshot_and_diverges_alone()
    {
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "db", "--size", "32MiB")).EnsureSuccess();
        var original = Content(2);
        await CopyInAsync(tmp, original, cairn.NbdUri("db"));
        (await cairn.CliAsync("snapshot", "create", "db", "s")).EnsureSuccess();
        (await cairn.CliAsync("volume", "clone", "db@s", "copy")).EnsureSuccess();
        Assert.Equal(original, await CopyOutAsync(tmp, cairn.NbdUri("copy")));

        var changed = Content(3);
        await CopyInAsync(tmp, changed, cairn.NbdUri("copy"));
        Assert.Equal(changed, await CopyOutAsync(tmp, cairn.NbdUri("copy")));
        Assert.Equal(original, await CopyOutAsync(tmp, cairn.NbdUri("db@s")));
        Assert.Equal(original, await CopyOutAsync(tmp, cairn.NbdUri("db")));
        (await cairn.CliAsync("snapshot", "delete", "db", "s")).EnsureSuccess(); // the clone keeps its blocks
        await cairn.RestartAsync();
        Assert.Equal(changed, await CopyOutAsync(tmp, cairn.NbdUri("copy")));
    }

    [Fact]
    public async Task Deleting_a_middle_snapshot_leaves_the_others_byte_for_byte()
    {
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "db", "--size", "32MiB")).EnsureSuccess();
        var expected = new List<byte[]>();
        for (int i = 0; i < 3; i++)
        {
            // Each round overwrites a different third of the volume, so neighbours share some blocks and not others.
            var content = expected.Count == 0 ? Content(10) : (byte[])expected[^1].Clone();
            new Random(20 + i).NextBytes(content.AsSpan(i * (VolumeBytes / 3), VolumeBytes / 3));
            await CopyInAsync(tmp, content, cairn.NbdUri("db"));
            (await cairn.CliAsync("snapshot", "create", "db", $"s{i}")).EnsureSuccess();
            expected.Add(content);
        }
        (await cairn.CliAsync("snapshot", "delete", "db", "s1")).EnsureSuccess();
        var list = (await cairn.CliAsync("snapshot", "list", "db")).EnsureSuccess();
        Assert.DoesNotContain("s1", list.Stdout, StringComparison.Ordinal);
        Assert.Equal(expected[0], await CopyOutAsync(tmp, cairn.NbdUri("db@s0")));
        Assert.Equal(expected[2], await CopyOutAsync(tmp, cairn.NbdUri("db@s2")));
        await cairn.RestartAsync();
        Assert.Equal(expected[0], await CopyOutAsync(tmp, cairn.NbdUri("db@s0")));
        Assert.Equal(expected[2], await CopyOutAsync(tmp, cairn.NbdUri("db@s2")));
        var scrub = (await cairn.CliAsync("volume", "scrub", "db")).EnsureSuccess();
        Assert.Contains("0 bad.", scrub.Stdout, StringComparison.Ordinal);
    }

    /// <summary>Random data with holes: 24 MiB of data, the rest zeros.</summary>
    private static byte[] Content(int seed)
    {
        var bytes = new byte[VolumeBytes];
        new Random(seed).NextBytes(bytes.AsSpan(0, 24 * MiB));
        return bytes;
    }

    private static async Task CopyInAsync(TempDirectory tmp, byte[] content, string uri)
    {
        var file = tmp.File("in.img");
        await File.WriteAllBytesAsync(file, content);
        (await ToolRun.RunAsync("nbdcopy", [file, uri], ToolTimeout)).EnsureSuccess();
    }

    private static async Task<byte[]> CopyOutAsync(TempDirectory tmp, string uri)
    {
        var file = tmp.File("out.img");
        File.Delete(file);
        (await ToolRun.RunAsync("nbdcopy", [uri, file], ToolTimeout)).EnsureSuccess();
        return await File.ReadAllBytesAsync(file);
    }
}

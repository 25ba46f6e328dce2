using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>
/// The Linux kernel's own initiators, open-iscsi and nbd.ko, inside a QEMU guest (scripts/guest) against a real
/// cairnd on the host: ext4 made, written, remounted and verified in the guest; then the host reads the volume
/// itself and finds the same file system and file.
/// </summary>
public sealed class KernelInitiatorTests
{
    private const int PatternLines = 400_000; // the guest writes `seq 1 400000`: 2.6 MB of text
    private const long VolumeBytes = 64L << 20;
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromMinutes(5); // TCG on a loaded 2-core machine
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(2);
    private static readonly byte[] Pattern = SeqOutput(PatternLines);

    [Fact]
    public async Task Open_iscsi_logs_in_makes_ext4_and_reads_back_what_it_wrote()
    {
        // The guest reaches the host as 10.0.2.2 (QEMU user networking): advertised, discovery hands out a portal it can dial.
        await using var cairn = await CairnDaemon.StartAsync(null, "--advertise-host", "10.0.2.2");
        (await cairn.CliAsync("volume", "create", "guest-iscsi", "--size", "64MiB")).EnsureSuccess();
        long allocatedBefore = await AllocatedBytesAsync(cairn, "guest-iscsi");

        var run = (await QemuGuest.RunAsync("iscsi", GuestParameters(cairn.IscsiPort, "guest-iscsi"), GuestTimeout)).EnsurePassed();

        Assert.Contains("logout", run.Steps);
        AssertGuestReadBackThePattern(run);
        long allocatedAfter = await AllocatedBytesAsync(cairn, "guest-iscsi");
        Assert.True(allocatedAfter - allocatedBefore >= Pattern.Length,
            $"the API reports {allocatedAfter - allocatedBefore} bytes newly allocated; the guest wrote {Pattern.Length} bytes of file data alone");
        using var tmp = new TempDirectory();
        await AssertVolumeHoldsExt4WithPatternAsync(await CopyVolumeAsync(cairn, "guest-iscsi", tmp), tmp);
    }

    [Fact]
    public async Task Kernel_nbd_client_makes_ext4_that_the_host_reads_back_identically()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "guest-nbd", "--size", "64MiB")).EnsureSuccess();

        var run = (await QemuGuest.RunAsync("nbd", GuestParameters(cairn.NbdPort, "guest-nbd"), GuestTimeout)).EnsurePassed();

        Assert.Contains("disconnect", run.Steps);
        AssertGuestReadBackThePattern(run);
        using var tmp = new TempDirectory();
        var image = await CopyVolumeAsync(cairn, "guest-nbd", tmp);
        // Every byte the guest's block device held after unmounting is what the host reads from the volume.
        Assert.Equal(run.Value("device-sha256"), Sha256Hex(await File.ReadAllBytesAsync(image)));
        await AssertVolumeHoldsExt4WithPatternAsync(image, tmp);
    }

    private static Dictionary<string, string> GuestParameters(int port, string volume) => new()
    {
        ["port"] = port.ToString(),
        ["volume"] = volume,
        ["lines"] = PatternLines.ToString(),
    };

    /// <summary>The guest saw the whole volume, and hashed the same bytes the host expects before and after a remount.</summary>
    private static void AssertGuestReadBackThePattern(GuestRun run)
    {
        string expected = Sha256Hex(Pattern);
        Assert.Equal(VolumeBytes.ToString(), run.Value("disk-bytes"));
        Assert.Equal(expected, run.Value("written-sha256"));
        Assert.Equal(expected, run.Value("read-sha256"));
        Assert.Equal(Pattern.Length.ToString(), run.Value("read-bytes"));
    }

    /// <summary>The volume starts with an ext4 superblock and its /pattern.txt (read by e2fsprogs on the host) holds the pattern.</summary>
    private static async Task AssertVolumeHoldsExt4WithPatternAsync(string image, TempDirectory tmp)
    {
        var superblockMagic = new byte[2];
        await using (var file = File.OpenRead(image))
        {
            file.Position = 1024 + 0x38; // s_magic in the superblock at byte 1024
            await file.ReadExactlyAsync(superblockMagic);
        }
        Assert.Equal(new byte[] { 0x53, 0xEF }, superblockMagic);
        var extracted = tmp.File("pattern.txt");
        (await ToolRun.RunAsync("debugfs", ["-R", $"dump /pattern.txt {extracted}", image], ToolTimeout)).EnsureSuccess();
        Assert.True(File.Exists(extracted), "debugfs found no /pattern.txt in the volume's ext4 file system");
        Assert.Equal(Sha256Hex(Pattern), Sha256Hex(await File.ReadAllBytesAsync(extracted)));
    }

    private static async Task<string> CopyVolumeAsync(CairnDaemon cairn, string volume, TempDirectory tmp)
    {
        var image = tmp.File(volume + ".raw");
        (await ToolRun.RunAsync("nbdcopy", [cairn.NbdUri(volume), image], ToolTimeout)).EnsureSuccess();
        Assert.Equal(VolumeBytes, new FileInfo(image).Length);
        return image;
    }

    private static async Task<long> AllocatedBytesAsync(CairnDaemon cairn, string volume)
    {
        var show = (await cairn.CliAsync("volume", "show", volume, "--json")).EnsureSuccess();
        using var doc = JsonDocument.Parse(show.Stdout);
        return doc.RootElement.GetProperty("allocatedBytes").GetInt64();
    }

    /// <summary>The bytes busybox's `seq 1 N` prints: the decimal numbers 1..N, one per line.</summary>
    private static byte[] SeqOutput(int lines)
    {
        var text = new StringBuilder();
        for (int i = 1; i <= lines; i++)
        {
            text.Append(i).Append('\n');
        }
        return Encoding.ASCII.GetBytes(text.ToString());
    }

    private static string Sha256Hex(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));
}

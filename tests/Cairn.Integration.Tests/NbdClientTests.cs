using System.Globalization;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>Debian's real NBD clients (libnbd's nbdinfo and nbdcopy, qemu-img, fio) against a real cairnd.</summary>
public sealed class NbdClientTests
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(3);
    private const long MiB = 1 << 20;

    [Fact]
    public async Task Nbdinfo_lists_every_volume_with_its_size()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "alpha", "--size", "64MiB")).EnsureSuccess();
        (await cairn.CliAsync("volume", "create", "beta", "--size", "1GiB")).EnsureSuccess();

        var list = (await ToolRun.RunAsync("nbdinfo", ["--list", $"nbd://127.0.0.1:{cairn.NbdPort}"], ToolTimeout)).EnsureSuccess();

        Assert.Contains("export=\"alpha\"", list.Stdout, StringComparison.Ordinal);
        Assert.Contains("export=\"beta\"", list.Stdout, StringComparison.Ordinal);
        Assert.Contains("export-size: 67108864", list.Stdout, StringComparison.Ordinal);
        Assert.Contains("export-size: 1073741824", list.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Nbdcopy_round_trips_a_file_with_holes_and_nbdinfo_maps_them()
    {
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "disk", "--size", "64MiB")).EnsureSuccess();

        // A sparse source: data at [1 MiB, 2 MiB) and one block at 40 MiB, holes elsewhere.
        var source = tmp.File("source.img");
        var expected = new byte[64 * MiB];
        var random = new Random(42);
        random.NextBytes(expected.AsSpan((int)MiB, (int)MiB));
        random.NextBytes(expected.AsSpan((int)(40 * MiB), 4096));
        await WriteSparseAsync(source, expected);

        var map = await MapAsync(cairn.NbdUri("disk"));
        Assert.Equal(new[] { (0L, 64 * MiB, "hole,zero") }, map);

        (await ToolRun.RunAsync("nbdcopy", [source, cairn.NbdUri("disk")], ToolTimeout)).EnsureSuccess();
        map = await MapAsync(cairn.NbdUri("disk"));
        Assert.Contains(map, e => e.Description == "data" && e.Offset <= MiB && e.Offset + e.Length >= 2 * MiB);
        Assert.Contains(map, e => e.Description == "hole,zero" && e.Offset <= 4 * MiB && e.Offset + e.Length >= 39 * MiB);
        Assert.Contains(map, e => e.Description == "data" && e.Offset <= 40 * MiB && e.Offset + e.Length >= 40 * MiB + 4096);

        var copy = tmp.File("copy.img");
        (await ToolRun.RunAsync("nbdcopy", [cairn.NbdUri("disk"), copy], ToolTimeout)).EnsureSuccess();
        var copied = await File.ReadAllBytesAsync(copy);
        Assert.True(expected.AsSpan().SequenceEqual(copied), "nbdcopy read back different bytes");

        var volume = (await cairn.CliAsync("volume", "show", "disk", "--json")).EnsureSuccess();
        Assert.Contains("\"allocatedBytes\"", volume.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Qemu_img_converts_onto_a_volume_and_compares_identical()
    {
        using var tmp = new TempDirectory();
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "vm", "--size", "32MiB")).EnsureSuccess();
        var image = tmp.File("vm.raw");
        var bytes = new byte[32 * MiB];
        new Random(7).NextBytes(bytes.AsSpan(0, (int)(8 * MiB)));
        new Random(8).NextBytes(bytes.AsSpan((int)(20 * MiB), (int)(3 * MiB) + 512));
        await WriteSparseAsync(image, bytes);

        (await ToolRun.RunAsync("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", image, cairn.NbdUri("vm")], ToolTimeout)).EnsureSuccess();
        var compare = await ToolRun.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, cairn.NbdUri("vm")], ToolTimeout);
        compare.EnsureSuccess();
        Assert.Contains("Images are identical", compare.Stdout, StringComparison.Ordinal);

        // And the comparison can fail: change one byte on the volume.
        using (var client = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "vm"))
        {
            client.Write(5 * MiB, [(byte)(bytes[5 * MiB] ^ 0xFF)]);
            client.Flush();
        }
        var differ = await ToolRun.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, cairn.NbdUri("vm")], ToolTimeout);
        Assert.Equal(1, differ.ExitCode);
    }

    [Fact]
    public async Task Fio_verifies_mixed_reads_writes_and_trims_over_several_connections_at_qd32()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "fio", "--size", "128MiB")).EnsureSuccess();
        var uri = cairn.NbdUri("fio");

        var fio = await ToolRun.RunAsync("fio",
        [
            "--output-format=normal", "--group_reporting",
            // Four connections, each verifying its own 16 MiB region with CRC32C under a 70/30 write/read mix.
            "--name=mix", "--ioengine=nbd", $"--uri={uri}", "--rw=randrw", "--rwmixread=30", "--bs=4k",
            "--iodepth=32", "--numjobs=4", "--size=16M", "--offset_increment=16M",
            "--verify=crc32c", "--verify_fatal=1",
            // A fifth connection trims before it writes, then verifies.
            "--name=trims", "--ioengine=nbd", $"--uri={uri}", "--offset=64M", "--size=32M", "--rw=randtrimwrite",
            "--bs=4k", "--iodepth=32", "--verify=crc32c", "--verify_fatal=1",
            // A sixth writes large unaligned-size blocks with flushes.
            "--name=big", "--ioengine=nbd", $"--uri={uri}", "--offset=96M", "--size=32M", "--rw=randwrite",
            "--bsrange=512-256k", "--fsync=8", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1",
        ], TimeSpan.FromMinutes(5));

        fio.EnsureSuccess();
        Assert.DoesNotContain("verify:", fio.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Matches(@"err= 0", fio.Stdout);
        Assert.DoesNotMatch(@"err=\s*[1-9-]", fio.Stdout);
        Assert.Contains("TRIM:", fio.Stdout, StringComparison.Ordinal);
    }

    private static async Task<List<(long Offset, long Length, string Description)>> MapAsync(string uri)
    {
        var result = (await ToolRun.RunAsync("nbdinfo", ["--map", uri], ToolTimeout)).EnsureSuccess();
        var extents = new List<(long, long, string)>();
        foreach (var line in result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // "offset  length  type  description", e.g. "0  1048576  3  hole,zero"
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            extents.Add((long.Parse(parts[0], CultureInfo.InvariantCulture), long.Parse(parts[1], CultureInfo.InvariantCulture), parts[^1]));
        }
        return extents;
    }

    /// <summary>Writes only the non-zero 4 KiB blocks, so the file really has holes.</summary>
    private static async Task WriteSparseAsync(string path, byte[] content)
    {
        await using var file = new FileStream(path, FileMode.Create, FileAccess.Write);
        file.SetLength(content.Length);
        for (int offset = 0; offset < content.Length; offset += 4096)
        {
            var block = content.AsMemory(offset, Math.Min(4096, content.Length - offset));
            if (block.Span.IndexOfAnyExcept((byte)0) >= 0)
            {
                file.Position = offset;
                await file.WriteAsync(block);
            }
        }
    }
}

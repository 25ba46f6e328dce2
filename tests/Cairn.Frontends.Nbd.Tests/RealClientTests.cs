using System.Text.RegularExpressions;
using Cairn.Core;

namespace Cairn.Frontends.Nbd.Tests;

/// <summary>The server against the clients people actually use: libnbd's tools, qemu and fio.</summary>
public sealed partial class RealClientTests : IDisposable
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(3);
    private readonly string _dir = Directory.CreateTempSubdirectory("cairn-nbd-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Uri(ServerHarness h, string export = "disk") => $"nbd://127.0.0.1:{h.Port}/{export}";

    [Fact]
    public async Task Nbdinfo_lists_exports_with_their_details()
    {
        await using var h = await ServerHarness.StartAsync();
        var r = await ExternalTool.RunAsync("nbdinfo", "libnbd-bin", ToolTimeout, "--list", $"nbd://127.0.0.1:{h.Port}");
        Assert.True(r.ExitCode == 0, r.Describe("nbdinfo --list"));
        Assert.Contains("export=\"disk\"", r.StandardOutput);
        Assert.Contains("export=\"ro\"", r.StandardOutput);
        Assert.Contains("description: the test disk", r.StandardOutput);
        Assert.Contains("block_size_maximum: 33554432", r.StandardOutput);
        Assert.Contains("is_read_only: true", r.StandardOutput);
        Assert.Contains("base:allocation", r.StandardOutput);
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Nbdinfo_map_shows_holes_and_data()
    {
        await using var h = await ServerHarness.StartAsync();
        await h.Disk.WriteAsync(1 << 20, new byte[65536].Select((_, i) => (byte)(i | 1)).ToArray(), cancellationToken: TestContext.Current.CancellationToken);
        var r = await ExternalTool.RunAsync("nbdinfo", "libnbd-bin", ToolTimeout, "--map", Uri(h));
        Assert.True(r.ExitCode == 0, r.Describe("nbdinfo --map"));
        var rows = r.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => Whitespace().Split(line.Trim()))
            .Select(f => (Offset: long.Parse(f[0]), Length: long.Parse(f[1]), Type: int.Parse(f[2])))
            .ToArray();
        Assert.Equal(new[] { (0L, 1L << 20, 3), (1L << 20, 65536L, 0), ((1L << 20) + 65536, ServerHarness.DiskBytes - (1 << 20) - 65536, 3) }, rows);
    }

    [Fact]
    public async Task Nbdcopy_round_trips_a_sparse_file_and_qemu_img_compare_agrees()
    {
        await using var h = await ServerHarness.StartAsync();
        string source = Path.Combine(_dir, "source.img");
        var expected = SparseImage(source, ServerHarness.DiskBytes);

        var up = await ExternalTool.RunAsync("nbdcopy", "libnbd-bin", ToolTimeout, source, Uri(h));
        Assert.True(up.ExitCode == 0, up.Describe("nbdcopy upload"));
        Assert.True(expected.AsSpan().SequenceEqual(h.Disk.Data), "the export does not hold the uploaded bytes");

        string back = Path.Combine(_dir, "back.img");
        var down = await ExternalTool.RunAsync("nbdcopy", "libnbd-bin", ToolTimeout, Uri(h), back);
        Assert.True(down.ExitCode == 0, down.Describe("nbdcopy download"));
        Assert.True(expected.AsSpan().SequenceEqual(File.ReadAllBytes(back)), "the downloaded copy differs from the source");

        var same = await ExternalTool.RunAsync("qemu-img", "qemu-utils", ToolTimeout, "compare", "-f", "raw", "-F", "raw", source, Uri(h));
        Assert.True(same.ExitCode == 0, same.Describe("qemu-img compare"));

        // The comparison must be able to fail: change one byte of written data behind the client's back
        // (in a hole the device would rightly still report zeros through block status).
        int written = Array.FindLastIndex(expected, b => b != 0);
        Assert.Equal(AllocationState.Data, h.Disk.PageState(written));
        h.Disk.Data[written] ^= 0x5A;
        var differ = await ExternalTool.RunAsync("qemu-img", "qemu-utils", ToolTimeout, "compare", "-f", "raw", "-F", "raw", source, Uri(h));
        Assert.True(differ.ExitCode == 1, differ.Describe("qemu-img compare after corruption"));
    }

    /// <summary>A file with holes and scattered data; returns its full content.</summary>
    private static byte[] SparseImage(string path, long sizeBytes)
    {
        var content = new byte[sizeBytes];
        var random = new Random(1234);
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write);
        file.SetLength(sizeBytes);
        for (int i = 0; i < 40; i++)
        {
            int length = random.Next(1, 300_000);
            long offset = random.NextInt64(0, sizeBytes - length);
            random.NextBytes(content.AsSpan((int)offset, length));
            file.Position = offset;
            file.Write(content, (int)offset, length);
        }
        return content;
    }

    [Theory]
    [InlineData(NbdTransportKind.Epoll)]
    [InlineData(NbdTransportKind.Sockets)]
    internal async Task Fio_random_read_write_with_crc32c_verify_over_four_connections(NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(diskBytes: 256L << 20, configure: o => o.Transport = transport);
        var r = await ExternalTool.RunAsync("fio", "fio", ToolTimeout,
            "--name=verify", "--ioengine=nbd", $"--uri={Uri(h)}", "--rw=randrw", "--verify=crc32c", "--verify_fatal=1",
            "--numjobs=4", "--iodepth=32", "--bs=4k", "--size=64M", "--offset_increment=64M", "--group_reporting");
        Assert.True(r.ExitCode == 0, r.Describe("fio randrw verify"));
        Assert.Contains("err= 0", r.StandardOutput);
        Assert.DoesNotContain("verify: bad", r.StandardOutput + r.StandardError);
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Fio_trims_reach_the_device()
    {
        await using var h = await ServerHarness.StartAsync();
        var mixed = await ExternalTool.RunAsync("fio", "fio", ToolTimeout,
            "--name=trimwrite", "--ioengine=nbd", $"--uri={Uri(h)}", "--rw=randtrimwrite", "--iodepth=32", "--bs=4k", "--size=16M");
        Assert.True(mixed.ExitCode == 0, mixed.Describe("fio randtrimwrite"));
        Assert.Contains("err= 0", mixed.StandardOutput);

        var fill = await ExternalTool.RunAsync("fio", "fio", ToolTimeout,
            "--name=fill", "--ioengine=nbd", $"--uri={Uri(h)}", "--rw=write", "--iodepth=16", "--bs=64k", "--offset=32M", "--size=8M");
        Assert.True(fill.ExitCode == 0, fill.Describe("fio write"));
        Assert.Equal(AllocationState.Data, h.Disk.PageState(32 << 20));
        var trim = await ExternalTool.RunAsync("fio", "fio", ToolTimeout,
            "--name=trim", "--ioengine=nbd", $"--uri={Uri(h)}", "--rw=trim", "--iodepth=16", "--bs=64k", "--offset=32M", "--size=8M");
        Assert.True(trim.ExitCode == 0, trim.Describe("fio trim"));
        for (long offset = 32 << 20; offset < 40 << 20; offset += RamBlockDevice.PageBytes)
        {
            Assert.Equal(AllocationState.Hole, h.Disk.PageState(offset));
        }
        Assert.All(h.Disk.Data.Slice(32 << 20, 8 << 20).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Qemu_io_and_qemu_img_map_see_writes_zeroes_and_discards()
    {
        await using var h = await ServerHarness.StartAsync();
        var io = await ExternalTool.RunAsync("qemu-io", "qemu-utils", ToolTimeout, "-f", "raw",
            "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k", "-c", "write -z 64k 64k",
            "-c", "write -P 0xcd 128k 64k", "-c", "discard 128k 64k", "-c", "read -P 0 128k 64k", "-c", "flush", Uri(h));
        Assert.True(io.ExitCode == 0, io.Describe("qemu-io"));
        Assert.DoesNotContain("fail", io.StandardOutput + io.StandardError, StringComparison.OrdinalIgnoreCase);
        Assert.True(h.Disk.Flushes >= 1);

        var map = await ExternalTool.RunAsync("qemu-img", "qemu-utils", ToolTimeout, "map", "--output=json", Uri(h));
        Assert.True(map.ExitCode == 0, map.Describe("qemu-img map"));
        var extents = System.Text.Json.JsonDocument.Parse(map.StandardOutput).RootElement.EnumerateArray()
            .Select(e => (Start: e.GetProperty("start").GetInt64(), Length: e.GetProperty("length").GetInt64(),
                Zero: e.GetProperty("zero").GetBoolean(), Data: e.GetProperty("data").GetBoolean()))
            .ToArray();
        Assert.Equal(new[]
        {
            (0L, 65536L, false, true),                                  // written data
            (65536L, 65536L, true, true),                               // zeroes that stay allocated
            (131072L, ServerHarness.DiskBytes - 131072, true, false),   // discarded, then never written
        }, extents);
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>Interoperability with real initiators: libiscsi's tools (libiscsi-bin) and qemu-img's iscsi driver (qemu-block-extra).</summary>
public sealed class RealClientTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Discovery_lists_every_export_as_a_target()
    {
        await using var h = await ServerHarness.StartAsync();
        var r = await ExternalTool.RunAsync("iscsi-ls", "libiscsi-bin", Deadline, "-s", $"iscsi://127.0.0.1:{h.Port}");
        Assert.True(r.ExitCode == 0, r.Describe("iscsi-ls"));
        Assert.Contains($"Target:{ServerHarness.Prefix}disk Portal:127.0.0.1:{h.Port},1", r.StandardOutput);
        Assert.Contains($"Target:{ServerHarness.Prefix}ro Portal:127.0.0.1:{h.Port},1", r.StandardOutput);
        // -s logs into each target too and lists its LUNs with their size.
        Assert.Contains("Lun:0", r.StandardOutput);
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Inquiry_reports_a_direct_access_device_with_the_export_name()
    {
        await using var h = await ServerHarness.StartAsync();
        var r = await ExternalTool.RunAsync("iscsi-inq", "libiscsi-bin", Deadline, h.Url());
        Assert.True(r.ExitCode == 0, r.Describe("iscsi-inq"));
        Assert.True(r.StandardOutput.Contains("CAIRN", StringComparison.Ordinal), r.StandardOutput);
        Assert.True(r.StandardOutput.Contains("DIRECT_ACCESS", StringComparison.OrdinalIgnoreCase), r.StandardOutput);

        var vpd83 = await ExternalTool.RunAsync("iscsi-inq", "libiscsi-bin", Deadline, "-e", "1", "-c", "131", h.Url());
        Assert.True(vpd83.ExitCode == 0, vpd83.Describe("iscsi-inq -e 1 -c 0x83"));
        Assert.True(vpd83.StandardOutput.Contains("NAA", StringComparison.Ordinal), vpd83.StandardOutput);
    }

    [Fact]
    public async Task Read_capacity_16_reports_512_byte_blocks_and_block_limits_a_4_KiB_granularity()
    {
        await using var h = await ServerHarness.StartAsync();
        var r = await ExternalTool.RunAsync("iscsi-readcapacity16", "libiscsi-bin", Deadline, h.Url());
        Assert.True(r.ExitCode == 0, r.Describe("iscsi-readcapacity16"));
        // The tool prints "Returned Logical Block Address:131071" and friends; compare without spaces or case.
        string text = r.StandardOutput.Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant();
        Assert.True(text.Contains($"RETURNEDLOGICALBLOCKADDRESS:{(ServerHarness.DiskBytes / 512) - 1}\n", StringComparison.Ordinal), r.StandardOutput);
        Assert.True(text.Contains("LOGICALBLOCKLENGTHINBYTES:512\n", StringComparison.Ordinal), r.StandardOutput);
        Assert.True(text.Contains("LOGICALBLOCKSPERPHYSICALBLOCKEXPONENT:0\n", StringComparison.Ordinal) && text.Contains("LBPME:1LBPRZ:1\n", StringComparison.Ordinal), r.StandardOutput);

        // The 4 KiB preference travels in the Block Limits page instead (see ScsiLogicalUnit.PhysicalBlockExponent).
        var limits = await ExternalTool.RunAsync("iscsi-inq", "libiscsi-bin", Deadline, "-e", "1", "-c", "176", h.Url());
        Assert.True(limits.ExitCode == 0, limits.Describe("iscsi-inq -e 1 -c 0xb0"));
        string limitsText = limits.StandardOutput.Replace(" ", "", StringComparison.Ordinal).ToUpperInvariant();
        Assert.True(limitsText.Contains("OPTIMALTRANSFERLENGTHGRANULARITY:8\n", StringComparison.Ordinal), limits.StandardOutput);
    }

    [Fact]
    public async Task Qemu_img_round_trips_data_through_the_target()
    {
        await using var h = await ServerHarness.StartAsync(diskBytes: 16L << 20);
        string dir = Directory.CreateTempSubdirectory("cairn-iscsi-").FullName;
        try
        {
            string source = Path.Combine(dir, "source.img");
            var bytes = new byte[16 << 20];
            new Random(42).NextBytes(bytes.AsSpan(0, 5 << 20));
            bytes.AsSpan(9 << 20, 3 << 20).Fill(0x5A); // a patterned region after a hole
            await File.WriteAllBytesAsync(source, bytes, TestContext.Current.CancellationToken);

            var copy = await ExternalTool.RunAsync("qemu-img", "qemu-utils qemu-block-extra", Deadline, "convert", "-n", "-f", "raw", "-O", "raw", source, h.Url());
            Assert.True(copy.ExitCode == 0, copy.Describe("qemu-img convert"));
            Assert.True(bytes.AsSpan().SequenceEqual(h.Disk.Data), "the volume does not hold the bytes qemu-img wrote");

            var compare = await ExternalTool.RunAsync("qemu-img", "qemu-utils qemu-block-extra", Deadline, "compare", "-f", "raw", "-F", "raw", source, h.Url());
            Assert.True(compare.ExitCode == 0, compare.Describe("qemu-img compare"));

            h.Disk.Data[12345] ^= 0xFF; // the comparison must be able to fail
            var differs = await ExternalTool.RunAsync("qemu-img", "qemu-utils qemu-block-extra", Deadline, "compare", "-f", "raw", "-F", "raw", source, h.Url());
            Assert.True(differs.ExitCode == 1, differs.Describe("qemu-img compare after corrupting one byte"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Qemu_img_bench_pipelines_32_writes_and_flushes_without_errors()
    {
        await using var h = await ServerHarness.StartAsync(diskBytes: 16L << 20);
        // 2048 writes of 4 KiB at queue depth 32, a flush every 256: commands pipeline behind each other in the CmdSN window.
        var write = await ExternalTool.RunAsync("qemu-img", "qemu-utils qemu-block-extra", Deadline,
            "bench", "-w", "-f", "raw", "-t", "none", "-d", "32", "-c", "2048", "-s", "4096", "--pattern=165", "--flush-interval=256", h.Url());
        Assert.True(write.ExitCode == 0, write.Describe("qemu-img bench -w"));
        Assert.True(h.Disk.Data[..(8 << 20)].IndexOfAnyExcept((byte)165) < 0, "the benchmark's pattern is not on the volume");
        Assert.True(h.Disk.Data[(8 << 20)..].IndexOfAnyExcept((byte)0) < 0, "bytes past the benchmark's range changed");
        Assert.True(h.Disk.Flushes >= 8, $"{h.Disk.Flushes} flushes reached the device, expected at least 8");

        var read = await ExternalTool.RunAsync("qemu-img", "qemu-utils qemu-block-extra", Deadline,
            "bench", "-f", "raw", "-t", "none", "-d", "32", "-c", "2048", "-s", "65536", h.Url());
        Assert.True(read.ExitCode == 0, read.Describe("qemu-img bench (read)"));
        await h.Catalog.WaitForNoSessionsAsync();
    }
}

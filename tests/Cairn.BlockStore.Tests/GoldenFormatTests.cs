using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

/// <summary>
/// Pins on-disk format v1. A small pool is built deterministically (fixed clock, fixed pool id, simulated disk);
/// its files must equal the committed files in Golden/v1 byte for byte AND the hashes below, and the committed
/// files must open and read back. If one of these fails, the format changed: bump PoolFormat.Version (and
/// MinCompatibleVersion if old readers cannot read it), keep reading v1, and add Golden/v2 — do not just regenerate.
/// Regenerate deliberately with CAIRN_WRITE_GOLDEN=1.
/// </summary>
public sealed class GoldenFormatTests
{
    private static readonly string[] Files = ["pool.cairn", "data.cairn", "checkpoint.cairn", "journal-0000000001.cairn"];

    private static readonly Dictionary<string, string> Sha256 = new()
    {
        ["pool.cairn"] = "12f9c512dbb2e1199de827bb0c60778daabd8506b7cd5658c8dfb000e8a161ab",
        ["data.cairn"] = "2703b32edbf88b1052461700aac3252dbdbc1266b17c68bbdcd5740405fd82e4",
        ["checkpoint.cairn"] = "6dbe8fc324e5971f8568fecbd0ca827ba431078c1172082a6cc5196e0524cfaa",
        ["journal-0000000001.cairn"] = "e435c94cc6bcf603bb5b7a4e8eefc91954357760cc8dbb91043b0bc4a8fba7c4",
    };

    [Fact]
    public async Task A_deterministic_pool_is_written_exactly_as_format_v1()
    {
        var medium = await BuildGoldenPool();
        Assert.Equal(Files.Order(StringComparer.Ordinal), medium.ListFiles());
        if (Environment.GetEnvironmentVariable("CAIRN_WRITE_GOLDEN") == "1")
        {
            foreach (var f in Files)
            {
                File.WriteAllBytes(Path.Combine(SourceGoldenDir(), f), medium.ReadAllBytes(f));
                Console.WriteLine($"{f} {Convert.ToHexStringLower(SHA256.HashData(medium.ReadAllBytes(f)))}");
            }
            return;
        }
        foreach (var f in Files)
        {
            var bytes = medium.ReadAllBytes(f);
            Assert.True(File.ReadAllBytes(CommittedPath(f)).AsSpan().SequenceEqual(bytes), $"{f} differs from the committed golden file: the on-disk format changed");
            Assert.Equal(Sha256[f], Convert.ToHexStringLower(SHA256.HashData(bytes)));
        }
    }

    [Fact]
    public async Task The_committed_v1_pool_opens_and_reads_back()
    {
        var medium = new SimulatedMedium();
        foreach (var f in Files)
        {
            medium.AddFile(f, File.ReadAllBytes(CommittedPath(f)));
        }
        using var pool = BlockPool.Open(medium, Deterministic());
        Assert.Equal("golden", pool.Name);
        Assert.Equal(1L << 20, pool.CapacityBytes);
        Assert.Equal(FixedTime, pool.CreatedAt);
        Assert.Equal(["golden-vol", "second"], pool.ListVolumes().Select(v => v.Id));
        await AssertGoldenContent(pool);
    }

    [Fact]
    public void The_header_layout_is_little_endian_at_fixed_offsets()
    {
        var header = File.ReadAllBytes(CommittedPath("pool.cairn"));
        Assert.Equal(PoolHeader.Bytes, header.Length);
        Assert.Equal("CAIRNPOL"u8.ToArray(), header[..8]);
        Assert.Equal([1, 0, 1, 0], header[8..12]);               // Version 1, MinCompatibleVersion 1
        Assert.Equal([0, 2, 0, 0], header[12..16]);              // header length 512
        Assert.Equal([0, 0x10, 0, 0], header[16..20]);           // block size 4096
        Assert.Equal(1L << 20, BitConverter.ToInt64(header, 24)); // capacity
        Assert.Equal(Crc32C.Compute(header.AsSpan(0, 508)), BitConverter.ToUInt32(header, 508));
    }

    private static async Task<SimulatedMedium> BuildGoldenPool()
    {
        var medium = new SimulatedMedium();
        using var pool = BlockPool.Create(medium, "golden", 1L << 20, Deterministic());
        var v = pool.CreateVolume("golden-vol", (1L << 20) + 100);
        await v.WriteAsync(0, Pattern(Block, 1));
        await v.WriteAsync(5 * Block + 7, Pattern(100, 2));
        await v.WriteZeroesAsync(3 * Block, Block, ZeroFlags.NoHole);
        await v.FlushAsync();
        pool.CheckpointNow(); // checkpoint generation 1 holds the above
        var second = pool.CreateVolume("second", 2 * Block);
        await second.WriteAsync(0, Pattern(2 * Block, 3));
        await second.TrimAsync(Block, Block);
        await v.WriteAsync(1L << 20, Pattern(100, 4)); // the partial tail block
        v.Grow(2L << 20);
        await v.FlushAsync(); // journal generation 1 holds these
        return medium;
    }

    private static async Task AssertGoldenContent(BlockPool pool)
    {
        var v = pool.Volume("golden-vol");
        Assert.Equal(2L << 20, v.SizeBytes);
        Assert.Equal(Pattern(Block, 1), await v.ReadAsync(0, Block));
        Assert.Equal(Pattern(100, 2), await v.ReadAsync(5 * Block + 7, 100));
        Assert.Equal(Pattern(100, 4), await v.ReadAsync(1L << 20, 100));
        Assert.Equal(
            [new(Block, AllocationState.Data), new(2 * Block, AllocationState.Hole), new(Block, AllocationState.Zero),
             new(Block, AllocationState.Hole), new(Block, AllocationState.Data)],
            (await v.AllocationAsync(0, 6 * Block)));
        var second = pool.Volume("second");
        Assert.Equal(Pattern(2 * Block, 3).AsSpan(0, Block).ToArray(), await second.ReadAsync(0, Block));
        Assert.All(await second.ReadAsync(Block, Block), b => Assert.Equal(0, b));
        Assert.Equal(4 * Block, pool.UsedBytes);
    }

    private static string CommittedPath(string file) => Path.Combine(AppContext.BaseDirectory, "Golden", "v1", file);

    private static string SourceGoldenDir([CallerFilePath] string source = "") => Path.Combine(Path.GetDirectoryName(source)!, "Golden", "v1");
}

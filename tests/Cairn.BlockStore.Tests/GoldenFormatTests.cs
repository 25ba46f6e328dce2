using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

/// <summary>
/// Pins the on-disk formats. Golden/v1 holds a pool written by the v1 build: its files must keep their hashes and open
/// (and upgrade) with this build. Golden/v2 holds a pool built deterministically (fixed clock, fixed pool id, simulated
/// disk) with snapshots, a clone and a revert: this build must write it byte for byte and read it back. If the v2 test
/// fails, the format changed: bump PoolFormat.Version (and MinCompatibleVersion if old readers cannot read it), keep
/// reading v1 and v2, and add Golden/v3 — do not just regenerate. Regenerate v2 deliberately with CAIRN_WRITE_GOLDEN=1.
/// </summary>
public sealed class GoldenFormatTests
{
    private static readonly string[] V1Files = ["pool.cairn", "data.cairn", "checkpoint.cairn", "journal-0000000001.cairn"];
    private static readonly string[] V2Files = ["pool.cairn", "data.cairn", "checkpoint.cairn", "journal-0000000001.cairn"];

    private static readonly Dictionary<string, string> V1Sha256 = new()
    {
        ["pool.cairn"] = "12f9c512dbb2e1199de827bb0c60778daabd8506b7cd5658c8dfb000e8a161ab",
        ["data.cairn"] = "2703b32edbf88b1052461700aac3252dbdbc1266b17c68bbdcd5740405fd82e4",
        ["checkpoint.cairn"] = "6dbe8fc324e5971f8568fecbd0ca827ba431078c1172082a6cc5196e0524cfaa",
        ["journal-0000000001.cairn"] = "e435c94cc6bcf603bb5b7a4e8eefc91954357760cc8dbb91043b0bc4a8fba7c4",
    };

    private static readonly Dictionary<string, string> V2Sha256 = new()
    {
        ["pool.cairn"] = "79566cdd2ed7a286df8cd3a2c40e43f520b387f0159debe7d12ed0401c8f2977",
        ["data.cairn"] = "ae7945370b12f78df237b9100d084b038afec8a27f891e99e3ca0a4e31e88f0a",
        ["checkpoint.cairn"] = "49cdb988dc1c1f6813dedb05390e0d8bab7fc35d1ed259da989ef6a44be9b47e",
        ["journal-0000000001.cairn"] = "83f126c0ed46977d1d9a6743af165b9fe40d0f0294f67e4654862e7e72343919",
    };

    [Fact]
    public void The_committed_v1_files_are_unchanged()
    {
        foreach (var f in V1Files)
        {
            Assert.Equal(V1Sha256[f], Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(CommittedPath("v1", f)))));
        }
    }

    [Fact]
    public async Task The_committed_v1_pool_opens_reads_back_and_is_upgraded_to_v2()
    {
        var medium = Load("v1", V1Files);
        using (var pool = BlockPool.Open(medium, Deterministic()))
        {
            Assert.Equal("golden", pool.Name);
            Assert.Equal(1L << 20, pool.CapacityBytes);
            Assert.Equal(FixedTime, pool.CreatedAt);
            Assert.Equal(["golden-vol", "second"], pool.ListVolumes().Select(v => v.Id));
            await AssertBaseContent(pool);
        }
        Assert.Equal(PoolFormat.Version, BitConverter.ToUInt16(medium.ReadAllBytes(PoolFormat.HeaderFile), 8));
        Assert.Equal(PoolFormat.Version, BitConverter.ToUInt16(medium.ReadAllBytes(PoolFormat.CheckpointFile), 8));
        using var reopened = BlockPool.Open(medium, Deterministic());
        await AssertBaseContent(reopened);
        reopened.CreateSnapshot("golden-vol", "after-upgrade"); // the upgraded pool takes snapshots
        Assert.Single(reopened.ListSnapshots("golden-vol"));
    }

    [Fact]
    public async Task A_deterministic_pool_is_written_exactly_as_format_v2()
    {
        var medium = await BuildV2Pool();
        Assert.Equal(V2Files.Order(StringComparer.Ordinal), medium.ListFiles());
        if (Environment.GetEnvironmentVariable("CAIRN_WRITE_GOLDEN") == "1")
        {
            Directory.CreateDirectory(SourceGoldenDir("v2"));
            foreach (var f in V2Files)
            {
                File.WriteAllBytes(Path.Combine(SourceGoldenDir("v2"), f), medium.ReadAllBytes(f));
                Console.WriteLine($"{f} {Convert.ToHexStringLower(SHA256.HashData(medium.ReadAllBytes(f)))}");
            }
            return;
        }
        foreach (var f in V2Files)
        {
            var bytes = medium.ReadAllBytes(f);
            Assert.True(File.ReadAllBytes(CommittedPath("v2", f)).AsSpan().SequenceEqual(bytes), $"{f} differs from the committed golden file: the on-disk format changed");
            Assert.Equal(V2Sha256[f], Convert.ToHexStringLower(SHA256.HashData(bytes)));
        }
    }

    [Fact]
    public async Task The_committed_v2_pool_opens_and_reads_back()
    {
        using var pool = BlockPool.Open(Load("v2", V2Files), Deterministic());
        await AssertV2Content(pool);
    }

    [Fact]
    public void The_header_layout_is_little_endian_at_fixed_offsets()
    {
        foreach (var (version, expected) in new[] { ("v1", (byte)1), ("v2", (byte)2) })
        {
            var header = File.ReadAllBytes(CommittedPath(version, "pool.cairn"));
            Assert.Equal(PoolHeader.Bytes, header.Length);
            Assert.Equal("CAIRNPOL"u8.ToArray(), header[..8]);
            Assert.Equal([expected, 0, expected, 0], header[8..12]);  // Version, MinCompatibleVersion
            Assert.Equal([0, 2, 0, 0], header[12..16]);              // header length 512
            Assert.Equal([0, 0x10, 0, 0], header[16..20]);           // block size 4096
            Assert.Equal(1L << 20, BitConverter.ToInt64(header, 24)); // capacity
            Assert.Equal(Crc32C.Compute(header.AsSpan(0, 508)), BitConverter.ToUInt32(header, 508));
        }
    }

    /// <summary>The v1 golden workload, then snapshots (one in the checkpoint, the rest in the journal), a clone and a revert.</summary>
    private static async Task<SimulatedMedium> BuildV2Pool()
    {
        var medium = new SimulatedMedium();
        using var pool = BlockPool.Create(medium, "golden", 1L << 20, Deterministic());
        var v = pool.CreateVolume("golden-vol", (1L << 20) + 100);
        await v.WriteAsync(0, Pattern(Block, 1));
        await v.WriteAsync(5 * Block + 7, Pattern(100, 2));
        await v.WriteZeroesAsync(3 * Block, Block, ZeroFlags.NoHole);
        pool.CreateSnapshot("golden-vol", "first");
        await v.WriteAsync(0, Pattern(Block, 5));
        pool.CheckpointNow(); // checkpoint generation 1 holds the above, "first" as a parent of the live map
        var second = pool.CreateVolume("second", 2 * Block);
        await second.WriteAsync(0, Pattern(2 * Block, 3));
        await second.TrimAsync(Block, Block);
        await v.WriteAsync(1L << 20, Pattern(100, 4)); // the partial tail block
        v.Grow(2L << 20);
        pool.CreateSnapshot("golden-vol", "second-snap");
        pool.CreateSnapshot("golden-vol", "middle");
        await v.WriteAsync(Block, Pattern(Block, 6));
        pool.CloneVolume("clone", "golden-vol", "middle");
        pool.DeleteSnapshot("golden-vol", "second-snap");
        pool.CreateSnapshot("second", "s");
        await second.WriteAsync(0, Pattern(Block, 7));
        pool.RevertVolume("second", "s");
        await v.FlushAsync(); // journal generation 1 holds these
        await pool.WaitForReclaimAsync();
        return medium;
    }

    private static async Task AssertV2Content(BlockPool pool)
    {
        Assert.Equal(["clone", "golden-vol", "second"], pool.ListVolumes().Select(v => v.Id));
        Assert.Equal(["first", "middle"], pool.ListSnapshots("golden-vol").Select(s => s.Name));
        var v = pool.Volume("golden-vol");
        Assert.Equal(Pattern(Block, 5), await v.ReadAsync(0, Block));
        Assert.Equal(Pattern(Block, 6), await v.ReadAsync(Block, Block));
        Assert.Equal(Pattern(Block, 1), await pool.Snapshot("golden-vol", "first").ReadAsync(0, Block));
        var middle = pool.Snapshot("golden-vol", "middle");
        Assert.Equal(2L << 20, middle.SizeBytes);
        Assert.Equal(Pattern(Block, 5), await middle.ReadAsync(0, Block));
        Assert.Equal(Pattern(100, 4), await middle.ReadAsync(1L << 20, 100));
        var clone = pool.Volume("clone");
        Assert.Equal(Pattern(Block, 5), await clone.ReadAsync(0, Block));
        Assert.All(await clone.ReadAsync(Block, Block), b => Assert.Equal(0, b));
        Assert.Equal(Pattern(2 * Block, 3).AsSpan(0, Block).ToArray(), await pool.Volume("second").ReadAsync(0, Block));
        // Distinct blocks: v0 old+new, v5, tail, v1 new, second 1 = 6 (clone and snapshots share the rest).
        Assert.Equal(6 * Block, pool.UsedBytes);
    }

    private static async Task AssertBaseContent(BlockPool pool)
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

    private static SimulatedMedium Load(string version, string[] files)
    {
        var medium = new SimulatedMedium();
        foreach (var f in files)
        {
            medium.AddFile(f, File.ReadAllBytes(CommittedPath(version, f)));
        }
        return medium;
    }

    private static string CommittedPath(string version, string file) => Path.Combine(AppContext.BaseDirectory, "Golden", version, file);

    private static string SourceGoldenDir(string version, [CallerFilePath] string source = "") => Path.Combine(Path.GetDirectoryName(source)!, "Golden", version);
}

using System.Buffers.Binary;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class ConcurrencyTests
{
    private const long RegionBytes = 1L << 20;
    private const int OwnedRegions = 4;
    private const long OverlapStart = OwnedRegions * RegionBytes;
    private const int OverlapBlocks = 64;
    private const long SharedBlockStart = OverlapStart + OverlapBlocks * Block;
    private const int SharedBlocks = 4;

    [Fact]
    public async Task Concurrent_writers_readers_and_flushers_leave_every_region_consistent()
    {
        using var dir = new TempDir();
        var models = new byte[OwnedRegions][];
        int[] lastA = new int[SharedBlocks], lastB = new int[SharedBlocks];
        using (var pool = BlockPool.Create(dir.Path, "conc", 64L << 20))
        {
            var v = pool.CreateVolume("v", SharedBlockStart + SharedBlocks * Block);
            using var stop = new CancellationTokenSource();
            var tasks = new List<Task>();
            for (int r = 0; r < OwnedRegions; r++)
            {
                int region = r;
                models[r] = new byte[RegionBytes];
                tasks.Add(Task.Run(() => OwnRegion(v, region, models[region])));
            }
            for (int w = 1; w <= 3; w++)
            {
                int writer = w;
                tasks.Add(Task.Run(() => OverlapWriter(v, writer)));
            }
            tasks.Add(Task.Run(() => SharedBlockWriter(v, 0, 1000, lastA)));
            tasks.Add(Task.Run(() => SharedBlockWriter(v, 2000, 1000, lastB)));
            var background = new[]
            {
                Task.Run(() => OverlapReader(v, stop.Token)),
                Task.Run(() => OverlapReader(v, stop.Token)),
                Task.Run(async () =>
                {
                    while (!stop.IsCancellationRequested)
                    {
                        await v.FlushAsync();
                        await Task.Delay(1);
                    }
                }),
            };
            await Task.WhenAll(tasks);
            await stop.CancelAsync();
            await Task.WhenAll(background);
            await VerifyAll(v, models, lastA, lastB);
            Assert.Equal(v.AllocatedBytes, pool.UsedBytes);
        }
        using var reopened = BlockPool.Open(dir.Path);
        await VerifyAll(reopened.Volume("v"), models, lastA, lastB);
    }

    private static async Task OwnRegion(StoredVolume v, int region, byte[] model)
    {
        var rng = new Random(region);
        long baseOffset = region * RegionBytes;
        for (int i = 0; i < 150; i++)
        {
            bool aligned = rng.Next(2) == 0;
            long offset = aligned ? rng.Next((int)(RegionBytes / Block)) * (long)Block : rng.Next((int)RegionBytes);
            int length = (int)Math.Min(aligned ? Block * rng.Next(1, 9) : rng.Next(1, 20_000), RegionBytes - offset);
            if (rng.Next(8) == 0)
            {
                await v.TrimAsync(baseOffset + offset, length);
                Array.Clear(model, (int)offset, length);
            }
            else
            {
                var data = Pattern(length, region * 100_000 + i);
                await v.WriteAsync(baseOffset + offset, data, rng.Next(10) == 0 ? WriteFlags.ForceUnitAccess : WriteFlags.None);
                data.CopyTo(model, offset);
            }
        }
    }

    /// <summary>Whole-block writes whose every 8-byte word names (writer, sequence): a torn or mixed block is detectable.</summary>
    private static async Task OverlapWriter(StoredVolume v, int writer)
    {
        var rng = new Random(1000 + writer);
        var buffer = new byte[4 * Block];
        for (int seq = 1; seq <= 300; seq++)
        {
            int blocks = rng.Next(1, 5);
            int first = rng.Next(OverlapBlocks - blocks + 1);
            for (int b = 0; b < blocks; b++)
            {
                FillUniform(buffer.AsSpan(b * Block, Block), ((long)writer << 32) | (uint)seq);
            }
            await v.WriteAsync(OverlapStart + first * (long)Block, buffer.AsMemory(0, blocks * Block));
        }
    }

    private static async Task OverlapReader(StoredVolume v, CancellationToken stop)
    {
        var rng = new Random(7);
        var buffer = new byte[8 * Block];
        while (!stop.IsCancellationRequested)
        {
            int blocks = rng.Next(1, 9);
            int first = rng.Next(OverlapBlocks - blocks + 1);
            await v.ReadAsync(OverlapStart + first * (long)Block, buffer.AsMemory(0, blocks * Block), CancellationToken.None);
            for (int b = 0; b < blocks; b++)
            {
                AssertUniform(buffer.AsSpan(b * Block, Block));
            }
        }
    }

    /// <summary>Two writers update disjoint bytes of the same blocks: read-modify-write must not lose either's update.</summary>
    private static async Task SharedBlockWriter(StoredVolume v, int inBlock, int length, int[] last)
    {
        var buffer = new byte[length];
        for (int seq = 1; seq <= 200; seq++)
        {
            int b = seq % SharedBlocks;
            buffer.AsSpan().Fill((byte)seq);
            await v.WriteAsync(SharedBlockStart + b * (long)Block + inBlock, buffer);
            last[b] = seq;
        }
    }

    private static async Task VerifyAll(StoredVolume v, byte[][] models, int[] lastA, int[] lastB)
    {
        for (int r = 0; r < OwnedRegions; r++)
        {
            Assert.Equal(models[r], await v.ReadAsync(r * RegionBytes, (int)RegionBytes));
        }
        var overlap = await v.ReadAsync(OverlapStart, OverlapBlocks * Block);
        for (int b = 0; b < OverlapBlocks; b++)
        {
            AssertUniform(overlap.AsSpan(b * Block, Block));
        }
        for (int b = 0; b < SharedBlocks; b++)
        {
            var block = await v.ReadAsync(SharedBlockStart + b * (long)Block, Block);
            Assert.All(block[..1000], x => Assert.Equal((byte)lastA[b], x));
            Assert.All(block[2000..3000], x => Assert.Equal((byte)lastB[b], x));
            Assert.All(block[1000..2000], x => Assert.Equal(0, x));
        }
    }

    private static void FillUniform(Span<byte> block, long word)
    {
        for (int i = 0; i < block.Length; i += 8)
        {
            BinaryPrimitives.WriteInt64LittleEndian(block[i..], word);
        }
    }

    private static void AssertUniform(ReadOnlySpan<byte> block)
    {
        long first = BinaryPrimitives.ReadInt64LittleEndian(block);
        for (int i = 8; i < block.Length; i += 8)
        {
            if (BinaryPrimitives.ReadInt64LittleEndian(block[i..]) != first)
            {
                Assert.Fail($"block mixes two writes at byte {i}: {first:x} vs {BinaryPrimitives.ReadInt64LittleEndian(block[i..]):x}");
            }
        }
    }
}

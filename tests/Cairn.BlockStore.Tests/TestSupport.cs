using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore.Tests;

/// <summary>A temporary pool directory, removed afterwards.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "cairn-bs-" + Guid.NewGuid().ToString("N"));
    }

    public string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}

internal static class TestPools
{
    public const int Block = 4096;
    public static readonly DateTimeOffset FixedTime = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);
    public static readonly Guid FixedPoolId = new("0badc0de-cafe-4a11-b0c5-000000000001");

    /// <summary>Options for reproducible runs: fixed clock and pool id, and no background commit thread (sync points happen only where the test causes them).</summary>
    public static PoolOptions Deterministic(long checkpointJournalBytes = 64L << 20, int maxBatchBytes = 64 << 20, int punchHoleMinBlocks = 16) => new()
    {
        CommitInterval = null,
        Clock = () => FixedTime,
        NewPoolId = () => FixedPoolId,
        CheckpointJournalBytes = checkpointJournalBytes,
        MaxBatchBytes = maxBatchBytes,
        PunchHoleMinBlocks = punchHoleMinBlocks,
        BackgroundReclaim = false,
    };

    public static BlockPool Sim(SimulatedMedium medium, long capacityBytes, PoolOptions? options = null)
        => BlockPool.Create(medium, "sim-pool", capacityBytes, options ?? Deterministic());

    /// <summary>Deterministic, self-describing content: every byte depends on (tag, position).</summary>
    public static byte[] Pattern(int length, int tag)
    {
        var bytes = new byte[length];
        var rng = new Random(tag);
        rng.NextBytes(bytes);
        return bytes;
    }

    public static async Task<byte[]> ReadAsync(this StoredVolume volume, long offset, int length)
    {
        var buffer = new byte[length];
        await volume.ReadAsync(offset, buffer);
        return buffer;
    }

    public static async Task<BlockDeviceException> ThrowsBlockError(BlockError expected, Func<Task> action)
    {
        var ex = await Assert.ThrowsAsync<BlockDeviceException>(action);
        Assert.Equal(expected, ex.Error);
        return ex;
    }

    public static StoredVolume Volume(this BlockPool pool, string id)
    {
        Assert.True(pool.TryGetVolume(id, out var v));
        return v!;
    }

    public static async Task<AllocationExtent[]> AllocationAsync(this StoredVolume volume, long offset, long length, int maxExtents = 64)
    {
        var extents = new AllocationExtent[maxExtents];
        int n = await volume.GetAllocationAsync(offset, length, extents);
        return extents[..n];
    }
}

internal static class SnapshotTestExtensions
{
    public static StoredSnapshot Snapshot(this BlockPool pool, string volumeId, string name)
    {
        Assert.True(pool.TryGetSnapshot(volumeId, name, out var s), $"snapshot {volumeId}@{name} is missing");
        return s!;
    }

    public static async Task<byte[]> ReadAsync(this StoredSnapshot snapshot, long offset, int length)
    {
        var buffer = new byte[length];
        await snapshot.ReadAsync(offset, buffer);
        return buffer;
    }
}

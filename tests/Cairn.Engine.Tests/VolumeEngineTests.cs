using Cairn.Core;

namespace Cairn.Engine.Tests;

public sealed class VolumeEngineTests
{
    /// <summary>Records which call reached it, to prove the engine forwards every operation unchanged.</summary>
    private sealed class RecordingDevice : IBlockDevice
    {
        public List<string> Calls { get; } = [];
        public long SizeBytes => 1 << 20;
        public int PreferredBlockSizeBytes => 4096;
        public bool IsReadOnly => false;

        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
        {
            destination.Span.Fill(7);
            Calls.Add($"read {offset} {destination.Length}");
            return ValueTask.CompletedTask;
        }

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            Calls.Add($"write {offset} {source.Length} {flags}");
            return ValueTask.CompletedTask;
        }

        public ValueTask FlushAsync(CancellationToken cancellationToken = default)
        {
            Calls.Add("flush");
            return ValueTask.CompletedTask;
        }

        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            Calls.Add($"trim {offset} {length}");
            return ValueTask.CompletedTask;
        }

        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            Calls.Add($"zero {offset} {length} {zeroFlags}");
            return ValueTask.CompletedTask;
        }

        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
        {
            extents.Span[0] = new AllocationExtent(length, AllocationState.Hole);
            Calls.Add($"alloc {offset} {length}");
            return ValueTask.FromResult(1);
        }
    }

    [Fact]
    public async Task Every_operation_reaches_the_volume_below_unchanged()
    {
        var device = new RecordingDevice();
        var engine = new VolumeEngine("vol1", device);
        var buffer = new byte[512];
        await engine.ReadAsync(4096, buffer);
        await engine.WriteAsync(8192, buffer, WriteFlags.ForceUnitAccess);
        await engine.FlushAsync();
        await engine.TrimAsync(0, 4096);
        await engine.WriteZeroesAsync(4096, 4096, ZeroFlags.NoHole);
        var extents = new AllocationExtent[4];
        Assert.Equal(1, await engine.GetAllocationAsync(0, 65536, extents));

        Assert.Equal(["read 4096 512", "write 8192 512 ForceUnitAccess", "flush", "trim 0 4096", "zero 4096 4096 NoHole", "alloc 0 65536"], device.Calls);
        Assert.All(buffer, b => Assert.Equal(7, b));
        Assert.Equal((1L << 20, 4096, false, "vol1"), (engine.SizeBytes, engine.PreferredBlockSizeBytes, engine.IsReadOnly, engine.VolumeName));
    }
}

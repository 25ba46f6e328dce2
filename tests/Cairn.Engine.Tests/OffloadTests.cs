using Cairn.Core;

namespace Cairn.Engine.Tests;

/// <summary>What runs inline on a frontend's IO thread and what the engine moves off it.</summary>
public sealed class OffloadTests
{
    /// <summary>A device whose every call blocks its thread until the gate opens, like a slow fdatasync.</summary>
    private sealed class GatedDevice : IBlockDevice
    {
        public ManualResetEventSlim Gate { get; } = new(false);
        public long SizeBytes => 1L << 30;
        public int PreferredBlockSizeBytes => 4096;
        public bool IsReadOnly => false;

        private ValueTask Block()
        {
            Assert.True(Gate.Wait(TimeSpan.FromSeconds(60)), "gate never opened");
            return ValueTask.CompletedTask;
        }

        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) => Block();
        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => Block();
        public ValueTask FlushAsync(CancellationToken cancellationToken = default) => Block();
        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => Block();
        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => Block();
        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) => ValueTask.FromResult(0);
    }

    public static TheoryData<string> SlowOperations => ["flush", "fua-write", "large-read", "large-write", "wide-trim", "wide-zero"];

    [Theory]
    [MemberData(nameof(SlowOperations))]
    public async Task Slow_operations_never_block_the_calling_thread(string operation)
    {
        var device = new GatedDevice();
        var engine = new VolumeEngine("v", device);
        var big = new byte[VolumeEngine.OffloadTransferBytes];
        ValueTask pending = operation switch
        {
            "flush" => engine.FlushAsync(),
            "fua-write" => engine.WriteAsync(0, new byte[4096], WriteFlags.ForceUnitAccess),
            "large-read" => engine.ReadAsync(0, big),
            "large-write" => engine.WriteAsync(0, big),
            "wide-trim" => engine.TrimAsync(0, VolumeEngine.OffloadRangeBytes),
            _ => engine.WriteZeroesAsync(0, VolumeEngine.OffloadRangeBytes, ZeroFlags.None),
        };
        // Reaching this line at all proves the caller was not blocked; the operation must still be in progress.
        Assert.False(pending.IsCompleted);
        device.Gate.Set();
        await pending.AsTask().WaitAsync(TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task Small_reads_and_writes_complete_inline_on_a_synchronous_device()
    {
        var device = new GatedDevice();
        device.Gate.Set();
        var engine = new VolumeEngine("v", device);
        var small = new byte[VolumeEngine.OffloadTransferBytes - 512];
        var read = engine.ReadAsync(0, small);
        var write = engine.WriteAsync(0, small);
        var trim = engine.TrimAsync(0, 1 << 20);
        Assert.True(read.IsCompletedSuccessfully && write.IsCompletedSuccessfully && trim.IsCompletedSuccessfully);
        await read;
        await write;
        await trim;
    }

    [Fact]
    public async Task Errors_from_offloaded_operations_reach_the_caller()
    {
        var engine = new VolumeEngine("v", new FailingDevice());
        var error = await Assert.ThrowsAsync<BlockDeviceException>(async () => await engine.FlushAsync());
        Assert.Equal(BlockError.Io, error.Error);
    }

    private sealed class FailingDevice : IBlockDevice
    {
        public long SizeBytes => 4096;
        public int PreferredBlockSizeBytes => 4096;
        public bool IsReadOnly => false;
        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public ValueTask FlushAsync(CancellationToken cancellationToken = default) => throw new BlockDeviceException(BlockError.Io, "disk gone");
        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) => throw new NotSupportedException();
        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) => throw new NotSupportedException();
    }
}

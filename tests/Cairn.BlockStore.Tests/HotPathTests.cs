using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class HotPathTests
{
    /// <summary>The data path must not allocate per IO (no buffers, closures or tasks): it runs at 150k+ IOPS.</summary>
    [Fact]
    public void Aligned_reads_and_writes_do_not_allocate_per_io()
    {
        using var dir = new TempDir();
        using var pool = BlockPool.Create(dir.Path, "hot", 64L << 20);
        var v = pool.CreateVolume("v", 8L << 20);
        var buffer = Pattern(2 * Block, 1);
        var unaligned = new byte[100];
        var extents = new AllocationExtent[8];
        var rng = new Random(1);
        void Round(int ops)
        {
            for (int i = 0; i < ops; i++)
            {
                long offset = rng.Next(2048 - 4) * (long)Block;
                Complete(v.WriteAsync(offset, buffer));
                Complete(v.ReadAsync(offset, buffer));
                Complete(v.WriteAsync(offset + 2 * Block, buffer, WriteFlags.Uncached)); // a rebuild's copy: O_DIRECT from a pooled aligned buffer
                Complete(v.WriteAsync(offset + 10, unaligned));
                Complete(v.ReadAsync(offset + 10, unaligned));
                var allocation = v.GetAllocationAsync(offset, 4 * Block, extents);
                Assert.True(allocation.IsCompletedSuccessfully);
                Assert.True(allocation.Result > 0);
                if (i % 256 == 255)
                {
                    Complete(v.FlushAsync());
                }
            }
        }
        Round(2000); // warm up: JIT, batch buffers and free lists reach their working size
        long before = GC.GetAllocatedBytesForCurrentThread();
        long alignedBefore = DirectFile.BuffersAllocated;
        Round(2000);
        long perIo = (GC.GetAllocatedBytesForCurrentThread() - before) / (2000 * 6);
        Assert.True(perIo < 8, $"{perIo} bytes allocated per IO");
        Assert.Equal(alignedBefore, DirectFile.BuffersAllocated); // the uncached writes reused pooled aligned buffers (native memory)
    }

    private static void Complete(ValueTask task)
    {
        Assert.True(task.IsCompletedSuccessfully);
        task.GetAwaiter().GetResult();
    }
}

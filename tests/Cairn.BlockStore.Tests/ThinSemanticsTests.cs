using Cairn.BlockStore.Storage;
using Cairn.Core;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class ThinSemanticsTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly BlockPool _pool;

    public ThinSemanticsTests() => _pool = BlockPool.Create(_dir.Path, "test-pool", 64L << 20);

    public void Dispose()
    {
        _pool.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task New_volume_reads_zeros_and_costs_nothing()
    {
        var v = _pool.CreateVolume("v1", 100L << 30); // 100 GiB thin
        Assert.Equal(0, v.AllocatedBytes);
        Assert.Equal(0, _pool.UsedBytes);
        var data = await v.ReadAsync((50L << 30) + 123, 10_000);
        Assert.All(data, b => Assert.Equal(0, b));
        Assert.Equal(Block, v.PreferredBlockSizeBytes);
        Assert.False(v.IsReadOnly);
    }

    [Theory]
    [InlineData(0, 4096)]
    [InlineData(0, 65536)]
    [InlineData(1, 1)]
    [InlineData(100, 5000)]
    [InlineData(4095, 2)]
    [InlineData(8192, 4096 * 3 + 17)]
    [InlineData(12345, 300_000)]
    public async Task Write_then_read_round_trips_at_any_offset_and_length(long offset, int length)
    {
        var v = _pool.CreateVolume("v", 4L << 20);
        var model = new byte[4L << 20];
        var first = Pattern(length, 1);
        await v.WriteAsync(offset, first);
        first.CopyTo(model, offset);
        // overwrite a shifted, overlapping range to exercise read-modify-write over existing data
        var second = Pattern(length / 2 + 1, 2);
        long offset2 = offset + length / 3;
        await v.WriteAsync(offset2, second);
        second.CopyTo(model, offset2);

        long from = Math.Max(0, offset - 5000);
        int span = (int)Math.Min(model.Length - from, length + 10_000);
        Assert.Equal(model.AsSpan((int)from, span).ToArray(), await v.ReadAsync(from, span));
    }

    [Fact]
    public async Task Trim_frees_space_and_reads_zeros()
    {
        var v = _pool.CreateVolume("v", 1L << 20);
        var data = Pattern(16 * Block, 3);
        await v.WriteAsync(0, data);
        await v.FlushAsync();
        Assert.Equal(16 * Block, v.AllocatedBytes);
        Assert.Equal(16 * Block, _pool.UsedBytes);

        await v.TrimAsync(4 * Block, 8 * Block);
        Assert.Equal(8 * Block, v.AllocatedBytes);
        await v.FlushAsync();
        Assert.Equal(8 * Block, _pool.UsedBytes);
        Assert.All(await v.ReadAsync(4 * Block, 8 * Block), b => Assert.Equal(0, b));
        Assert.Equal(data.AsSpan(0, 4 * Block).ToArray(), await v.ReadAsync(0, 4 * Block));
        Assert.Equal(data.AsSpan(12 * Block).ToArray(), await v.ReadAsync(12 * Block, 4 * Block));
    }

    [Fact]
    public async Task Unaligned_trim_zeroes_partial_blocks_and_keeps_neighbours()
    {
        var v = _pool.CreateVolume("v", 1L << 20);
        var data = Pattern(4 * Block, 4);
        await v.WriteAsync(0, data);
        await v.TrimAsync(100, 2 * Block);
        var expected = (byte[])data.Clone();
        Array.Clear(expected, 100, 2 * Block);
        Assert.Equal(expected, await v.ReadAsync(0, 4 * Block));
        Assert.Equal(3 * Block, v.AllocatedBytes); // block 1 is whole and became a hole; blocks 0 and 2 were rewritten
    }

    [Fact]
    public async Task Write_zeroes_without_no_hole_punches_holes()
    {
        var v = _pool.CreateVolume("v", 1L << 20);
        await v.WriteAsync(0, Pattern(4 * Block, 5));
        await v.WriteZeroesAsync(0, 4 * Block, ZeroFlags.None);
        Assert.Equal(0, v.AllocatedBytes);
        Assert.Equal([new AllocationExtent(1L << 20, AllocationState.Hole)], await v.AllocationAsync(0, 1L << 20));
        Assert.All(await v.ReadAsync(0, 4 * Block), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Write_zeroes_with_no_hole_reports_allocated_zeros()
    {
        var v = _pool.CreateVolume("v", 1L << 20);
        await v.WriteAsync(0, Pattern(4 * Block, 6));
        await v.WriteZeroesAsync(Block, 2 * Block, ZeroFlags.NoHole);
        Assert.All(await v.ReadAsync(Block, 2 * Block), b => Assert.Equal(0, b));
        Assert.Equal(
            [new(Block, AllocationState.Data), new(2 * Block, AllocationState.Zero), new(Block, AllocationState.Data), new((1L << 20) - 4 * Block, AllocationState.Hole)],
            await v.AllocationAsync(0, 1L << 20));
        // an allocated-zero block takes no data block; writing it later allocates normally
        Assert.Equal(2 * Block, v.AllocatedBytes);
        await v.WriteAsync(Block, Pattern(Block, 7));
        Assert.Equal(3 * Block, v.AllocatedBytes);
    }

    [Fact]
    public async Task Fast_zero_succeeds_on_whole_blocks_and_refuses_partial_blocks_without_changing_anything()
    {
        var v = _pool.CreateVolume("v", 1L << 20);
        var data = Pattern(4 * Block, 8);
        await v.WriteAsync(0, data);
        await TestPools.ThrowsBlockError(BlockError.NotSupported, () => v.WriteZeroesAsync(10, Block, ZeroFlags.FastOnly).AsTask());
        Assert.Equal(data, await v.ReadAsync(0, 4 * Block));

        await v.WriteZeroesAsync(Block, Block, ZeroFlags.FastOnly);
        Assert.All(await v.ReadAsync(Block, Block), b => Assert.Equal(0, b));
        Assert.Equal(3 * Block, v.AllocatedBytes);
    }

    [Fact]
    public async Task Allocation_runs_are_merged_and_a_short_array_gets_a_prefix()
    {
        var v = _pool.CreateVolume("v", 64L * Block);
        await v.WriteAsync(0, Pattern(2 * Block, 9));
        await v.WriteAsync(5 * Block, Pattern(Block, 10));
        await v.WriteZeroesAsync(6 * Block, Block, ZeroFlags.NoHole);
        Assert.Equal(
            [new(2 * Block, AllocationState.Data), new(3 * Block, AllocationState.Hole), new(Block, AllocationState.Data),
             new(Block, AllocationState.Zero), new(57L * Block, AllocationState.Hole)],
            await v.AllocationAsync(0, 64L * Block));
        // unaligned start and a one-entry array: the first run only, clipped to the request
        Assert.Equal([new AllocationExtent(2 * Block - 100, AllocationState.Data)], await v.AllocationAsync(100, 10 * Block, maxExtents: 1));
        Assert.Equal([new AllocationExtent(50, AllocationState.Hole)], await v.AllocationAsync(3 * Block, 50));
    }

    [Fact]
    public async Task Grow_online_keeps_data_and_makes_new_space_readable_as_zeros()
    {
        var v = _pool.CreateVolume("v", 10_000); // not a block multiple
        var tail = Pattern(1000, 11);
        await v.WriteAsync(9000, tail);
        await TestPools.ThrowsBlockError(BlockError.InvalidArgument, () => v.WriteAsync(9500, new byte[501]).AsTask());
        v.Grow(20_000);
        Assert.Equal(20_000, v.SizeBytes);
        Assert.Equal(tail, await v.ReadAsync(9000, 1000));
        Assert.All(await v.ReadAsync(10_000, 10_000), b => Assert.Equal(0, b));
        await v.WriteAsync(19_999, new byte[] { 42 });
        Assert.Equal(42, (await v.ReadAsync(19_999, 1))[0]);
    }

    [Fact]
    public void Shrink_is_refused_with_a_clear_message()
    {
        var v = _pool.CreateVolume("v", 1L << 20);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => v.Grow(1L << 19));
        Assert.Contains("shrinking", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1L << 20, v.SizeBytes);
    }

    [Theory]
    [InlineData(-1, 10)]
    [InlineData(0, 1_000_001)]
    [InlineData(1_000_000, 1)]
    [InlineData(999_999, 2)]
    public async Task Out_of_range_io_is_an_invalid_argument(long offset, int length)
    {
        var v = _pool.CreateVolume("v", 1_000_000);
        await TestPools.ThrowsBlockError(BlockError.InvalidArgument, () => v.ReadAsync(offset, new byte[length]).AsTask());
        await TestPools.ThrowsBlockError(BlockError.InvalidArgument, () => v.WriteAsync(offset, new byte[length]).AsTask());
        await TestPools.ThrowsBlockError(BlockError.InvalidArgument, () => v.TrimAsync(offset, length).AsTask());
        await TestPools.ThrowsBlockError(BlockError.InvalidArgument, () => v.GetAllocationAsync(offset, length, new AllocationExtent[4]).AsTask());
    }

    [Fact]
    public async Task Delete_frees_space_and_fails_io_on_the_old_instance_with_shutdown()
    {
        var v = _pool.CreateVolume("gone", 1L << 20);
        var keep = _pool.CreateVolume("kept", 1L << 20);
        await v.WriteAsync(0, Pattern(32 * Block, 12));
        await keep.WriteAsync(0, Pattern(Block, 13));
        Assert.Equal(33 * Block, _pool.UsedBytes);
        Assert.Throws<InvalidOperationException>(() => _pool.CreateVolume("gone", 1));

        _pool.DeleteVolume("gone");
        Assert.Equal(Block, _pool.UsedBytes);
        Assert.False(_pool.TryGetVolume("gone", out _));
        Assert.Equal(["kept"], _pool.ListVolumes().Select(i => i.Id));
        await TestPools.ThrowsBlockError(BlockError.Shutdown, () => v.ReadAsync(0, new byte[10]).AsTask());
        await TestPools.ThrowsBlockError(BlockError.Shutdown, () => v.WriteAsync(0, new byte[10]).AsTask());
        await TestPools.ThrowsBlockError(BlockError.Shutdown, () => v.FlushAsync().AsTask());
        Assert.Throws<KeyNotFoundException>(() => _pool.DeleteVolume("gone"));

        // the id can be reused and starts empty
        var again = _pool.CreateVolume("gone", 1L << 20);
        Assert.All(await again.ReadAsync(0, 32 * Block), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Volume_list_reports_sizes_and_allocation()
    {
        var a = _pool.CreateVolume("b-vol", 5000);
        _pool.CreateVolume("a-vol", 1L << 30);
        await a.WriteAsync(0, new byte[10]);
        var list = _pool.ListVolumes();
        Assert.Equal(["a-vol", "b-vol"], list.Select(i => i.Id));
        Assert.Equal(5000, list[1].SizeBytes);
        Assert.Equal(Block, list[1].AllocatedBytes);
        Assert.Equal("test-pool", _pool.Name);
        Assert.Equal(64L << 20, _pool.CapacityBytes);
        Assert.Equal(_pool.CapacityBytes - Block, _pool.FreeBytes);
    }

    [Fact]
    public void Null_capacity_takes_the_filesystem_free_space()
    {
        using var dir = new TempDir();
        long before = new DriveInfo(Path.GetTempPath()).AvailableFreeSpace;
        using var pool = BlockPool.Create(dir.Path, "auto");
        Assert.InRange(pool.CapacityBytes, before / 2, before + (1L << 30));
    }

    [Fact]
    public void Create_refuses_a_directory_that_is_not_empty_or_already_a_pool()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Path);
        File.WriteAllText(Path.Combine(dir.Path, "someone-elses-file"), "x");
        Assert.Throws<InvalidOperationException>(() => BlockPool.Create(dir.Path, "p", 1 << 20));
        Assert.Throws<InvalidOperationException>(() => BlockPool.Create(_dir.Path, "p", 1 << 20));
    }
}

public sealed class NoSpaceTests
{
    [Fact]
    public async Task A_full_pool_fails_with_no_space_and_keeps_existing_data()
    {
        var medium = new SimulatedMedium();
        using (var pool = TestPools.Sim(medium, 16 * Block))
        {
            var v = pool.CreateVolume("v", 1L << 20);
            var data = Pattern(16 * Block, 20);
            await v.WriteAsync(0, data);
            await TestPools.ThrowsBlockError(BlockError.NoSpace, () => v.WriteAsync(16 * Block, Pattern(Block, 21)).AsTask());
            await TestPools.ThrowsBlockError(BlockError.NoSpace, () => v.WriteAsync(16 * Block + 10, new byte[10]).AsTask());
            Assert.Equal(data, await v.ReadAsync(0, 16 * Block));
            Assert.Equal(16 * Block, pool.UsedBytes);
            Assert.Equal(0, pool.FreeBytes);

            // freeing space makes writes work again, including overwrites that need a spare block
            await v.TrimAsync(0, Block);
            await v.WriteAsync(16 * Block, Pattern(Block, 22));
            await v.FlushAsync();
        }
        using var reopened = BlockPool.Open(medium, TestPools.Deterministic());
        var r = reopened.Volume("v");
        var expected = Pattern(16 * Block, 20);
        Array.Clear(expected, 0, Block);
        Assert.Equal(expected, await r.ReadAsync(0, 16 * Block));
        Assert.Equal(Pattern(Block, 22), await r.ReadAsync(16 * Block, Block));
    }

    [Fact]
    public async Task A_full_filesystem_maps_to_no_space_and_corrupts_nothing()
    {
        var medium = new SimulatedMedium();
        using var pool = TestPools.Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 1L << 20);
        var data = Pattern(4 * Block, 23);
        await v.WriteAsync(0, data);
        await v.FlushAsync();
        medium.AvailableBytes = medium.UsedBytes + Block; // the filesystem has one block left
        await TestPools.ThrowsBlockError(BlockError.NoSpace, () => v.WriteAsync(4 * Block, Pattern(8 * Block, 24)).AsTask());
        Assert.Equal(data, await v.ReadAsync(0, 4 * Block));
        medium.AvailableBytes = 1L << 40;
        await v.WriteAsync(4 * Block, Pattern(Block, 25));
        await v.FlushAsync();
        Assert.Equal(Pattern(Block, 25), await v.ReadAsync(4 * Block, Block));
    }
}

public sealed class TailBlockTests
{
    [Fact]
    public async Task The_partial_last_block_trims_as_a_whole_block_and_never_leaks_bytes_past_the_end()
    {
        var medium = new SimulatedMedium();
        using var pool = TestPools.Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 3 * TestPools.Block + 100);
        await v.WriteAsync(3 * TestPools.Block, TestPools.Pattern(100, 1));
        Assert.Equal(TestPools.Block, v.AllocatedBytes);
        // [3 blocks, end) covers the whole tail block as far as the volume goes: a map change, allowed as a fast zero
        await v.WriteZeroesAsync(3 * TestPools.Block, 100, ZeroFlags.FastOnly);
        Assert.Equal(0, v.AllocatedBytes);
        await v.WriteAsync(3 * TestPools.Block + 50, TestPools.Pattern(50, 2));
        v.Grow(4 * TestPools.Block);
        var tail = await v.ReadAsync(3 * TestPools.Block, TestPools.Block);
        Assert.All(tail[..50], b => Assert.Equal(0, b));
        Assert.Equal(TestPools.Pattern(50, 2), tail[50..100]);
        Assert.All(tail[100..], b => Assert.Equal(0, b)); // bytes past the old end read as zeros after growing
    }
}

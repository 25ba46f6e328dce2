using Cairn.BlockStore.Storage;
using static Cairn.BlockStore.Tests.TestPools;

namespace Cairn.BlockStore.Tests;

public sealed class ScrubTests
{
    [Fact]
    public async Task Scrub_verifies_each_block_of_the_volume_and_its_snapshots_once_and_reports_where_it_is_bad()
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 16 * Block);
        await v.WriteAsync(0, Pattern(8 * Block, 1)); // physical blocks 0..7
        pool.CreateSnapshot("v", "s");
        await v.WriteAsync(0, Pattern(2 * Block, 2)); // physical 8..9; 0..1 stay, held by "s" only
        await v.FlushAsync();
        var clean = pool.ScrubVolume("v");
        Assert.Equal(10, clean.BlocksChecked); // 8 in the snapshot + 2 the volume alone holds
        Assert.Equal(0, clean.ErrorCount);

        medium.Corrupt("data.cairn", 1 * Block + 10, [0xFF, 0xEE]);      // only the snapshot holds it
        medium.Corrupt("data.cairn", 9 * Block + 100, [0x01, 0x02, 0x03]); // only the volume holds it
        var reports = new List<ScrubProgress>();
        var result = pool.ScrubVolume("v", new SyncProgress(reports));
        Assert.Equal(10, result.BlocksChecked);
        Assert.Equal(2, result.ErrorCount);
        Assert.Equal([new ScrubError("v@s", Block, 1, "checksum mismatch"), new ScrubError("v", Block, 9, "checksum mismatch")], result.Errors);
        Assert.Equal(new ScrubProgress(10, 10, 2), reports[^1]);
        Assert.Equal(2, pool.ChecksumErrors);
    }

    [Fact]
    public async Task Scrub_hands_on_the_bad_blocks_the_live_volume_reads_also_those_it_shares_with_a_snapshot()
    {
        var medium = new SimulatedMedium();
        using var pool = Sim(medium, 1L << 20);
        var v = pool.CreateVolume("v", 16 * Block);
        await v.WriteAsync(0, Pattern(4 * Block, 1)); // physical 0..3
        pool.CreateSnapshot("v", "s");
        await v.WriteAsync(Block, Pattern(Block, 2));  // physical 4: block 1 of the volume; physical 1 stays, the snapshot's alone
        await v.FlushAsync();

        medium.Corrupt("data.cairn", 0 * Block + 7, [0x5A]); // shared by the snapshot and the volume
        medium.Corrupt("data.cairn", 1 * Block + 7, [0x5A]); // the snapshot's alone: the volume does not read it
        medium.Corrupt("data.cairn", 4 * Block + 7, [0x5A]); // the volume's alone
        var result = pool.ScrubVolume("v");

        Assert.Equal(3, result.ErrorCount);
        Assert.Equal([new VolumeBadBlock(0, SharedWithSnapshot: true), new VolumeBadBlock(Block, SharedWithSnapshot: false)], result.VolumeBadBlocks);
    }

    [Fact]
    public async Task Scrub_of_an_unknown_volume_is_refused_and_cancellation_stops_it()
    {
        using var pool = Sim(new SimulatedMedium(), 1L << 20);
        Assert.Throws<KeyNotFoundException>(() => pool.ScrubVolume("nope"));
        await pool.CreateVolume("v", 4 * Block).WriteAsync(0, Pattern(4 * Block, 1));
        Assert.Throws<OperationCanceledException>(() => pool.ScrubVolume("v", cancellationToken: new CancellationToken(canceled: true)));
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; this records reports in order, on the scrubbing thread.</summary>
    private sealed class SyncProgress(List<ScrubProgress> reports) : IProgress<ScrubProgress>
    {
        public void Report(ScrubProgress value) => reports.Add(value);
    }
}

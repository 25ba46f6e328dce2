namespace Cairn.Replication.Tests;

public sealed class DirtyRegionMapTests
{
    private const int Granule = DirtyRegionMap.GranuleBytes;
    private const int Chunk = DirtyRegionMap.ChunkBytes;

    [Fact]
    public void Marks_widen_to_whole_granules_and_adjacent_ones_merge_across_chunks()
    {
        var map = new DirtyRegionMap(sinceEpoch: 7);
        map.Mark(100, 10);                     // inside granule 0
        map.Mark(Granule, Granule);            // granule 1: merges with 0
        map.Mark(Chunk - Granule, 2 * Granule); // the last granule of chunk 0 and the first of chunk 1: one range
        map.Mark(5L * Chunk + 1, Granule);     // straddles two granules of chunk 5

        Assert.Equal(
            [new DirtyRange(0, 2 * Granule), new DirtyRange(Chunk - Granule, 2 * Granule), new DirtyRange(5L * Chunk, 2 * Granule)],
            map.Ranges());
        Assert.Equal(6L * Granule, map.DirtyBytes);
        Assert.Equal(7UL, map.SinceEpoch);
    }

    [Fact]
    public void Marking_twice_counts_once_and_zero_lengths_mark_nothing()
    {
        var map = new DirtyRegionMap();
        map.Mark(0, 3 * Granule);
        map.Mark(Granule, Granule);
        map.Mark(123456, 0);

        Assert.Equal(3L * Granule, map.DirtyBytes);
        Assert.Single(map.Ranges());
        Assert.Throws<ArgumentOutOfRangeException>(() => map.Mark(-1, 1));
    }

    [Fact]
    public void Large_ranges_come_back_as_one_and_clear_empties_the_map()
    {
        var map = new DirtyRegionMap();
        map.Mark(3L * Granule, (1L << 30) + 5);

        var range = Assert.Single(map.Ranges());
        Assert.Equal(3L * Granule, range.Offset);
        Assert.Equal((1L << 30) + Granule, range.Length); // the 5 trailing bytes take one more granule
        map.Clear();
        Assert.True(map.IsEmpty);
        Assert.Empty(map.Ranges());
    }

    [Fact]
    public void Random_4_KiB_writes_resync_at_most_twice_the_bytes_written()
    {
        var map = new DirtyRegionMap();
        var random = new Random(42);
        long writes = 0;
        for (int i = 0; i < 20_000; i++)
        {
            long offset = random.NextInt64(0, (64L << 30) - Granule) & ~511L; // sector-aligned, rarely granule-aligned
            map.Mark(offset, Granule);
            writes++;
        }

        Assert.InRange(map.DirtyBytes, writes * Granule / 2, 2 * writes * Granule);
        long covered = map.Ranges().Sum(r => r.Length);
        Assert.Equal(map.DirtyBytes, covered);
        var ranges = map.Ranges();
        for (int i = 1; i < ranges.Count; i++)
        {
            Assert.True(ranges[i - 1].End < ranges[i].Offset, "ranges are ordered and merged");
        }
    }

    [Fact]
    public void Every_marked_byte_is_covered_and_nothing_else()
    {
        var map = new DirtyRegionMap();
        var random = new Random(7);
        var expected = new bool[4 * Chunk / Granule];
        for (int i = 0; i < 300; i++)
        {
            long offset = random.Next(0, 4 * Chunk - 70_000);
            int length = random.Next(1, 70_000);
            map.Mark(offset, length);
            for (long g = offset / Granule; g <= (offset + length - 1) / Granule; g++)
            {
                expected[g] = true;
            }
        }

        var actual = new bool[expected.Length];
        foreach (var range in map.Ranges())
        {
            Assert.Equal(0, range.Offset % Granule);
            for (long g = range.Offset / Granule; g < range.End / Granule; g++)
            {
                actual[g] = true;
            }
        }
        Assert.Equal(expected, actual);
        Assert.Equal(expected.Count(d => d) * (long)Granule, map.DirtyBytes);
    }
}

using System.Runtime.CompilerServices;
using Cairn.BlockStore.Format;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>Something whose map a read went through: told about a block that failed its checksum (it throws).</summary>
internal interface IChecksumReporter
{
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    void ReportChecksumError(long lba, uint physicalBlock);
}

/// <summary>
/// The read path shared by live volumes and snapshots: lock-free lookups in one map inside a read epoch, consecutive
/// physical blocks read with one pread, every block verified against the CRC32C in its map entry.
/// </summary>
internal static class MapReads
{
    private const int BlockBytes = PoolFormat.BlockBytes;
    private const int BlockShift = PoolFormat.BlockShift;
    /// <summary>Whole blocks looked up, read and verified together (1 MiB); bounds stack use for entries and CRCs.</summary>
    public const int MaxRunBlocks = 256;

    /// <summary>Reads a range the caller has checked against the map's size.</summary>
    [SkipLocalsInit]
    public static void Read(BlockPool pool, ExtentMap map, long offset, Span<byte> destination, IChecksumReporter reporter)
    {
        Span<ulong> entries = stackalloc ulong[MaxRunBlocks];
        Span<uint> crcs = stackalloc uint[MaxRunBlocks];
        Span<byte> scratch = stackalloc byte[BlockBytes];
        int epoch = pool.EnterEpoch();
        try
        {
            int done = 0;
            while (done < destination.Length)
            {
                long pos = offset + done;
                long lba = pos >> BlockShift;
                int inBlock = (int)(pos & (BlockBytes - 1));
                int n = Math.Min(BlockBytes - inBlock, destination.Length - done);
                if (n == BlockBytes)
                {
                    int blocks = Math.Min(MaxRunBlocks, (destination.Length - done) / BlockBytes);
                    n = blocks * BlockBytes;
                    ReadWholeBlocks(pool, map, lba, destination.Slice(done, n), entries[..blocks], crcs, reporter);
                }
                else
                {
                    ulong entry = map.Get(lba);
                    if (ExtentMap.IsData(entry))
                    {
                        pool.ReadData(ExtentMap.PhysicalOf(entry), scratch);
                        Verify(scratch, entry, lba, reporter);
                        scratch.Slice(inBlock, n).CopyTo(destination[done..]);
                    }
                    else
                    {
                        destination.Slice(done, n).Clear();
                    }
                }
                done += n;
            }
        }
        finally
        {
            pool.ExitEpoch(epoch);
        }
    }

    /// <summary>Checks one block against its entry's CRC; a mismatch is reported (which throws).</summary>
    public static void Verify(ReadOnlySpan<byte> block, ulong entry, long lba, IChecksumReporter reporter)
    {
        if (Crc32C.Compute(block) != ExtentMap.CrcOf(entry))
        {
            reporter.ReportChecksumError(lba, ExtentMap.PhysicalOf(entry));
        }
    }

    /// <summary>
    /// Reads whole blocks: one pread per run of blocks that sit consecutively in the data file, holes cleared. Only then
    /// verifies, one checksum pass per stretch of data blocks however scattered they were: the CRC instruction's latency
    /// hides only when several blocks are hashed together, and after random overwrites a run is often a single block.
    /// </summary>
    private static void ReadWholeBlocks(BlockPool pool, ExtentMap map, long lba, Span<byte> destination, Span<ulong> entries, Span<uint> crcs, IChecksumReporter reporter)
    {
        int count = entries.Length;
        for (int i = 0; i < count; i++)
        {
            entries[i] = map.Get(lba + i);
        }
        int at = 0;
        while (at < count)
        {
            ulong first = entries[at];
            if (!ExtentMap.IsData(first))
            {
                destination.Slice(at * BlockBytes, BlockBytes).Clear();
                at++;
                continue;
            }
            uint physical = ExtentMap.PhysicalOf(first);
            int run = 1;
            while (at + run < count && ExtentMap.IsData(entries[at + run]) && ExtentMap.PhysicalOf(entries[at + run]) == physical + (uint)run)
            {
                run++;
            }
            pool.ReadData(physical, destination.Slice(at * BlockBytes, run * BlockBytes));
            at += run;
        }
        VerifyData(destination, entries, crcs, lba, reporter);
    }

    /// <summary>Verifies every data block of <paramref name="blocks"/> (entries say which); the first mismatch is reported (which throws).</summary>
    private static void VerifyData(ReadOnlySpan<byte> blocks, ReadOnlySpan<ulong> entries, Span<uint> crcs, long lba, IChecksumReporter reporter)
    {
        int at = 0;
        while (at < entries.Length)
        {
            if (!ExtentMap.IsData(entries[at]))
            {
                at++;
                continue;
            }
            int stretch = 1;
            while (at + stretch < entries.Length && ExtentMap.IsData(entries[at + stretch]))
            {
                stretch++;
            }
            Crc32C.ComputeBlocks(blocks.Slice(at * BlockBytes, stretch * BlockBytes), BlockBytes, crcs);
            for (int i = 0; i < stretch; i++)
            {
                if (crcs[i] != ExtentMap.CrcOf(entries[at + i]))
                {
                    reporter.ReportChecksumError(lba + at + i, ExtentMap.PhysicalOf(entries[at + i]));
                }
            }
            at += stretch;
        }
    }

    /// <summary>Allocation runs of a checked, non-empty range (see <see cref="IBlockDevice.GetAllocationAsync"/>).</summary>
    public static int DescribeAllocation(ExtentMap map, long offset, long length, Span<AllocationExtent> extents)
    {
        if (length == 0 || extents.IsEmpty)
        {
            return 0;
        }
        long end = offset + length;
        int count = 0;
        long runStart = offset;
        var runState = StateAt(map, offset >> BlockShift);
        long pos = offset;
        while (pos < end)
        {
            long lba = pos >> BlockShift;
            long next = map.IsPageEmpty(lba)
                ? ((lba | (ExtentMap.PageEntries - 1)) + 1) << BlockShift
                : (lba + 1) << BlockShift;
            next = Math.Min(next, end);
            var state = StateAt(map, lba);
            if (state != runState)
            {
                extents[count++] = new AllocationExtent(pos - runStart, runState);
                if (count == extents.Length)
                {
                    return count;
                }
                runStart = pos;
                runState = state;
            }
            pos = next;
        }
        extents[count++] = new AllocationExtent(end - runStart, runState);
        return count;
    }

    private static AllocationState StateAt(ExtentMap map, long lba) => ExtentMap.State(map.Get(lba)) switch
    {
        AllocationStateOf.Data => AllocationState.Data,
        AllocationStateOf.Zero => AllocationState.Zero,
        _ => AllocationState.Hole,
    };
}

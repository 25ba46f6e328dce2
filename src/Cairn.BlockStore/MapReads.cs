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
    /// <summary>Largest run moved by one pread (1 MiB); bounds stack use for per-block CRCs.</summary>
    public const int MaxRunBlocks = 256;

    /// <summary>Reads a range the caller has checked against the map's size.</summary>
    [SkipLocalsInit]
    public static void Read(BlockPool pool, ExtentMap map, long offset, Span<byte> destination, IChecksumReporter reporter)
    {
        Span<ulong> entries = stackalloc ulong[MaxRunBlocks];
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
                ulong entry = map.Get(lba);
                if (!ExtentMap.IsData(entry))
                {
                    destination.Slice(done, n).Clear();
                }
                else if (n == BlockBytes)
                {
                    n = ReadRun(pool, map, lba, entry, destination[done..], entries, reporter);
                }
                else
                {
                    pool.ReadData(ExtentMap.PhysicalOf(entry), scratch);
                    Verify(scratch, entry, lba, reporter);
                    scratch.Slice(inBlock, n).CopyTo(destination[done..]);
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

    /// <summary>Reads whole blocks that sit consecutively in the data file with one pread, then verifies each; returns bytes read.</summary>
    [SkipLocalsInit]
    private static int ReadRun(BlockPool pool, ExtentMap map, long lba, ulong first, Span<byte> destination, Span<ulong> entries, IChecksumReporter reporter)
    {
        entries[0] = first;
        uint physical = ExtentMap.PhysicalOf(first);
        int run = 1;
        int maxRun = Math.Min(MaxRunBlocks, destination.Length / BlockBytes);
        while (run < maxRun)
        {
            ulong next = map.Get(lba + run);
            if (!ExtentMap.IsData(next) || ExtentMap.PhysicalOf(next) != physical + (uint)run)
            {
                break;
            }
            entries[run++] = next;
        }
        var target = destination[..(run * BlockBytes)];
        pool.ReadData(physical, target);
        Span<uint> crcs = stackalloc uint[MaxRunBlocks];
        Crc32C.ComputeBlocks(target, BlockBytes, crcs);
        for (int i = 0; i < run; i++)
        {
            if (crcs[i] != ExtentMap.CrcOf(entries[i]))
            {
                Verify(target.Slice(i * BlockBytes, BlockBytes), entries[i], lba + i, reporter); // reports and throws
            }
        }
        return run * BlockBytes;
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

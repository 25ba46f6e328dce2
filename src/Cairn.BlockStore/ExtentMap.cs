using System.Runtime.CompilerServices;

namespace Cairn.BlockStore;

/// <summary>
/// One map of logical block → physical block (a volume's live map or a snapshot's frozen one): a two-level paged array,
/// pages allocated on first use, so a large thin volume with little data costs little memory. An entry is 8 bytes:
/// low 32 bits = physical block + 1 (0 = hole, <see cref="ZeroMarker"/> = allocated zeros), high 32 bits = CRC32C.
/// </summary>
/// <remarks>
/// Pages are copy-on-write between maps: <see cref="Fork"/> copies only the page directory (8 bytes per 16 MiB of
/// volume), and each map copies a shared page the first time it changes an entry in it. That makes a snapshot cost a
/// pointer copy instead of a map copy, and it lets scans skip pages two maps still share (<see cref="PageAt"/>).
/// Readers are lock-free (entries are read atomically); writers hold the pool's batch lock.
/// </remarks>
internal sealed class ExtentMap
{
    public const int PageShift = 12;
    public const int PageEntries = 1 << PageShift;
    public const uint ZeroMarker = uint.MaxValue;
    /// <summary>Largest physical block number an entry can name.</summary>
    public const uint MaxPhysicalBlock = uint.MaxValue - 2;

    private ulong[]?[] _pages;
    /// <summary>Bit per page: set when only this map references the page, so it may change it in place.</summary>
    private ulong[] _owned;

    public ExtentMap(long blockCount)
    {
        _pages = new ulong[PageCount(blockCount)][];
        _owned = new ulong[(_pages.Length + 63) / 64];
        BlockCount = blockCount;
    }

    private ExtentMap(ulong[]?[] pages, long blockCount)
    {
        _pages = pages;
        _owned = new ulong[(pages.Length + 63) / 64];
        BlockCount = blockCount;
    }

    public long BlockCount { get; private set; }

    public long PageCountNow => Volatile.Read(ref _pages).Length;

    public static ulong DataEntry(uint physicalBlock, uint crc) => (physicalBlock + 1u) | ((ulong)crc << 32);

    public static ulong ZeroEntry => ZeroMarker;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsData(ulong entry) => (uint)entry is not 0 and not ZeroMarker;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint PhysicalOf(ulong entry) => (uint)entry - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint CrcOf(ulong entry) => (uint)(entry >> 32);

    /// <summary>True when both entries are data in the same physical block (one block referenced by two maps).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool SameBlock(ulong a, ulong b) => IsData(a) && (uint)a == (uint)b;

    public static AllocationStateOf State(ulong entry) => (uint)entry switch
    {
        0 => AllocationStateOf.Hole,
        ZeroMarker => AllocationStateOf.Zero,
        _ => AllocationStateOf.Data,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Get(long block)
    {
        var pages = Volatile.Read(ref _pages);
        var page = Volatile.Read(ref pages[block >> PageShift]);
        return page is null ? 0 : Volatile.Read(ref page[block & (PageEntries - 1)]);
    }

    /// <summary>Like <see cref="Get"/>, but a hole past the end of the map (an older, smaller snapshot).</summary>
    public ulong GetOrHole(long block) => block < BlockCount ? Get(block) : 0;

    /// <summary>True when the page holding <paramref name="block"/> was never allocated (every entry in it is a hole).</summary>
    public bool IsPageEmpty(long block)
    {
        var pages = Volatile.Read(ref _pages);
        return Volatile.Read(ref pages[block >> PageShift]) is null;
    }

    /// <summary>The page array itself (null = all holes); two maps holding the same array agree on every entry in it.</summary>
    public ulong[]? PageAt(long pageIndex)
    {
        var pages = Volatile.Read(ref _pages);
        return pageIndex < pages.Length ? Volatile.Read(ref pages[pageIndex]) : null;
    }

    /// <summary>
    /// A new map with the same entries, sharing every page: neither map may change a shared page in place any more,
    /// so each copies a page the first time it writes to it. Caller holds the lock that writers of this map hold.
    /// </summary>
    public ExtentMap Fork()
    {
        var pages = _pages;
        Array.Clear(_owned);
        return new ExtentMap((ulong[]?[])pages.Clone(), BlockCount);
    }

    /// <summary>Sets an entry and returns the previous one. Caller holds the pool's batch lock.</summary>
    public ulong Set(long block, ulong entry)
    {
        var pages = _pages;
        long index = block >> PageShift;
        var page = pages[index];
        if (page is null)
        {
            if (entry == 0)
            {
                return 0;
            }
            page = new ulong[PageEntries];
            MarkOwned(index);
            Volatile.Write(ref pages[index], page);
        }
        else if ((_owned[index >> 6] & (1UL << (int)(index & 63))) == 0)
        {
            ref ulong shared = ref page[block & (PageEntries - 1)];
            if (shared == entry)
            {
                return entry; // nothing changes: keep sharing
            }
            page = (ulong[])page.Clone(); // readers keep the old copy, which other maps still use
            MarkOwned(index);
            Volatile.Write(ref pages[index], page);
        }
        ref ulong slot = ref page[block & (PageEntries - 1)];
        ulong old = slot;
        Volatile.Write(ref slot, entry);
        return old;
    }

    /// <summary>Grows the map to cover <paramref name="blockCount"/> blocks. Caller holds the pool's batch lock.</summary>
    public void Grow(long blockCount)
    {
        if (blockCount <= BlockCount)
        {
            return;
        }
        long pageCount = PageCount(blockCount);
        if (pageCount > _pages.Length)
        {
            var bigger = new ulong[pageCount][];
            Array.Copy(_pages, bigger, _pages.Length);
            var owned = new ulong[(pageCount + 63) / 64];
            Array.Copy(_owned, owned, _owned.Length);
            _owned = owned;
            Volatile.Write(ref _pages, bigger);
        }
        BlockCount = blockCount;
    }

    /// <summary>Data entries in the map (shared ones included).</summary>
    public long CountData()
    {
        long count = 0;
        for (long p = 0; p < PageCountNow; p++)
        {
            var page = PageAt(p);
            if (page is null)
            {
                continue;
            }
            foreach (ulong e in page)
            {
                if (IsData(e))
                {
                    count++;
                }
            }
        }
        return count;
    }

    private void MarkOwned(long index) => _owned[index >> 6] |= 1UL << (int)(index & 63);

    private static long PageCount(long blockCount) => (blockCount + PageEntries - 1) >> PageShift;
}

/// <summary>Map entry states (mirrors <see cref="Cairn.Core.AllocationState"/> without tying the map to the contract).</summary>
internal enum AllocationStateOf : byte { Data, Hole, Zero }

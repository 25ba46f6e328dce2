using System.Runtime.CompilerServices;

namespace Cairn.BlockStore;

/// <summary>
/// One volume's logical-block → physical-block map: a two-level paged array, pages allocated on first use,
/// so a large thin volume with little data costs little memory. An entry is 8 bytes:
/// low 32 bits = physical block + 1 (0 = hole, <see cref="ZeroMarker"/> = allocated zeros), high 32 bits = CRC32C.
/// </summary>
/// <remarks>Readers are lock-free (entries are read atomically); writers hold the owning volume's lock.</remarks>
internal sealed class ExtentMap
{
    public const int PageShift = 12;
    public const int PageEntries = 1 << PageShift;
    public const uint ZeroMarker = uint.MaxValue;
    /// <summary>Largest physical block number an entry can name.</summary>
    public const uint MaxPhysicalBlock = uint.MaxValue - 2;

    private ulong[]?[] _pages;

    public ExtentMap(long blockCount)
    {
        _pages = new ulong[PageCount(blockCount)][];
        BlockCount = blockCount;
    }

    public long BlockCount { get; private set; }

    public static ulong DataEntry(uint physicalBlock, uint crc) => (physicalBlock + 1u) | ((ulong)crc << 32);

    public static ulong ZeroEntry => ZeroMarker;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsData(ulong entry) => (uint)entry is not 0 and not ZeroMarker;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint PhysicalOf(ulong entry) => (uint)entry - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint CrcOf(ulong entry) => (uint)(entry >> 32);

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

    /// <summary>True when the page holding <paramref name="block"/> was never allocated (every entry in it is a hole).</summary>
    public bool IsPageEmpty(long block)
    {
        var pages = Volatile.Read(ref _pages);
        return Volatile.Read(ref pages[block >> PageShift]) is null;
    }

    /// <summary>Sets an entry and returns the previous one. Caller holds the volume lock.</summary>
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
            Volatile.Write(ref pages[index], page);
        }
        ref ulong slot = ref page[block & (PageEntries - 1)];
        ulong old = slot;
        Volatile.Write(ref slot, entry);
        return old;
    }

    /// <summary>Grows the map to cover <paramref name="blockCount"/> blocks. Caller holds the volume lock.</summary>
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
            Volatile.Write(ref _pages, bigger);
        }
        BlockCount = blockCount;
    }

    private static long PageCount(long blockCount) => (blockCount + PageEntries - 1) >> PageShift;
}

/// <summary>Map entry states (mirrors <see cref="Cairn.Core.AllocationState"/> without tying the map to the contract).</summary>
internal enum AllocationStateOf : byte { Data, Hole, Zero }

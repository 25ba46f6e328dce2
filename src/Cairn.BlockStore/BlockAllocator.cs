using System.Numerics;

namespace Cairn.BlockStore;

/// <summary>
/// Pool-wide free-space bitmap over the data file's physical blocks. Not persisted: on open it is rebuilt
/// from the extent maps. New space cannot dip into a small reserve kept for copy-on-write overwrites,
/// so a full pool can still overwrite blocks it already holds. Allocation is next-fit from the lowest freed block.
/// </summary>
internal sealed class BlockAllocator
{
    private readonly Lock _lock = new();
    private readonly ulong[] _bits;
    private readonly long _reserveBlocks;
    private long _usedBlocks;
    private long _cursor;

    public BlockAllocator(long totalBlocks)
    {
        TotalBlocks = totalBlocks;
        _bits = new ulong[(totalBlocks + 63) / 64];
        _reserveBlocks = Math.Min(1024, totalBlocks / 100);
    }

    public long TotalBlocks { get; }

    public long UsedBlocks => Volatile.Read(ref _usedBlocks);

    /// <summary>Marks a block used while rebuilding; false when it was already used (two map entries share it).</summary>
    public bool MarkUsed(uint block)
    {
        ref ulong word = ref _bits[block >> 6];
        ulong mask = 1UL << (int)(block & 63);
        if ((word & mask) != 0)
        {
            return false;
        }
        word |= mask;
        _usedBlocks++;
        return true;
    }

    /// <summary>Allocates a run of 1..<paramref name="want"/> consecutive blocks; returns its length, 0 when full.</summary>
    public int Allocate(int want, bool mayUseReserve, out uint first)
    {
        lock (_lock)
        {
            first = 0;
            long limit = mayUseReserve ? TotalBlocks : TotalBlocks - _reserveBlocks;
            long room = limit - _usedBlocks;
            if (room <= 0)
            {
                return 0;
            }
            long start = FindFree(_cursor);
            if (start < 0)
            {
                start = FindFree(0);
                if (start < 0)
                {
                    return 0;
                }
            }
            int n = 0;
            long max = Math.Min(want, room);
            while (n < max && start + n < TotalBlocks && !IsUsed(start + n))
            {
                SetUsed(start + n);
                n++;
            }
            _usedBlocks += n;
            _cursor = start + n;
            first = (uint)start;
            return n;
        }
    }

    public void Free(uint first, int count)
    {
        lock (_lock)
        {
            for (long b = first; b < first + (long)count; b++)
            {
                ref ulong word = ref _bits[b >> 6];
                ulong mask = 1UL << (int)(b & 63);
                if ((word & mask) == 0)
                {
                    throw new InvalidOperationException($"block store bug: physical block {b} freed twice");
                }
                word &= ~mask;
            }
            _usedBlocks -= count;
            // Lowest-first: reuse space the filesystem already backs (writing into never-touched parts of
            // the sparse file costs a filesystem allocation per write) and keep the data file compact.
            _cursor = Math.Min(_cursor, first);
        }
    }

    private bool IsUsed(long block) => (_bits[block >> 6] & (1UL << (int)(block & 63))) != 0;

    private void SetUsed(long block) => _bits[block >> 6] |= 1UL << (int)(block & 63);

    private long FindFree(long from)
    {
        if (from >= TotalBlocks)
        {
            return -1;
        }
        long wordIndex = from >> 6;
        ulong free = ~_bits[wordIndex] & (ulong.MaxValue << (int)(from & 63));
        while (true)
        {
            if (free != 0)
            {
                long block = (wordIndex << 6) + BitOperations.TrailingZeroCount(free);
                return block < TotalBlocks ? block : -1;
            }
            wordIndex++;
            if (wordIndex >= _bits.Length)
            {
                return -1;
            }
            free = ~_bits[wordIndex];
        }
    }
}

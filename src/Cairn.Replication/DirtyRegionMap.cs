using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Cairn.Replication;

/// <summary>A byte range of a volume: <see cref="Offset"/> and <see cref="Length"/> in bytes.</summary>
public readonly record struct DirtyRange(long Offset, long Length)
{
    public long End => Offset + Length;
}

/// <summary>
/// The regions of a volume written since a replica left the in-sync set, so that it can be resynced from those alone
/// (invariant 3) rather than copied in full. Sparse: one 256-bit bitmap per 1 MiB chunk that was touched, one bit per
/// 4 KiB, so random 4 KiB writes during an outage cost at most the 4 KiB pages they straddle (≤ 2x the bytes written)
/// and an untouched volume costs nothing. Thread-safe: writes mark it while a rebuild reads it.
/// </summary>
public sealed class DirtyRegionMap
{
    public const int GranuleBytes = 4096;
    public const int ChunkBytes = 1 << 20;
    private const int GranulesPerChunk = ChunkBytes / GranuleBytes; // 256 bits: four words
    private const int WordBits = 64;

    private readonly Dictionary<long, ChunkBits> _chunks = [];
    private readonly Lock _lock = new();
    private long _dirtyGranules;

    /// <param name="sinceEpoch">The epoch at which the replica left the in-sync set: its <see cref="ReplicaMember.FailedAtEpoch"/>.</param>
    public DirtyRegionMap(ulong sinceEpoch = 0) => SinceEpoch = sinceEpoch;

    public ulong SinceEpoch { get; }

    /// <summary>How many bytes a resync from this map copies: every dirty 4 KiB granule.</summary>
    public long DirtyBytes => Interlocked.Read(ref _dirtyGranules) * GranuleBytes;

    public bool IsEmpty => Interlocked.Read(ref _dirtyGranules) == 0;

    /// <summary>Marks <paramref name="length"/> bytes at <paramref name="offset"/>, widened to whole 4 KiB granules.</summary>
    public void Mark(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0)
        {
            return;
        }
        long first = offset / GranuleBytes;
        long end = (offset + length + GranuleBytes - 1) / GranuleBytes; // exclusive
        lock (_lock)
        {
            for (long granule = first; granule < end;)
            {
                long chunk = granule / GranulesPerChunk;
                long chunkEnd = Math.Min(end, (chunk + 1) * GranulesPerChunk);
                ref var bits = ref CollectionsMarshal.GetValueRefOrAddDefault(_chunks, chunk, out _);
                Interlocked.Add(ref _dirtyGranules, bits.Set((int)(granule - chunk * GranulesPerChunk), (int)(chunkEnd - chunk * GranulesPerChunk)));
                granule = chunkEnd;
            }
        }
    }

    /// <summary>The dirty regions in ascending order, adjacent granules merged into one range; a copy, so marking may go on meanwhile.</summary>
    public IReadOnlyList<DirtyRange> Ranges()
    {
        var ranges = new List<DirtyRange>();
        lock (_lock)
        {
            long[] chunks = [.. _chunks.Keys];
            Array.Sort(chunks);
            long runStart = -1, runEnd = -1; // in granules
            foreach (long chunk in chunks)
            {
                var bits = _chunks[chunk];
                for (int word = 0; word < GranulesPerChunk / WordBits; word++)
                {
                    ulong value = bits[word];
                    long wordBase = chunk * GranulesPerChunk + word * WordBits;
                    while (value != 0)
                    {
                        int start = BitOperations.TrailingZeroCount(value);
                        int ones = BitOperations.TrailingZeroCount(~(value >> start));
                        ones = start + ones > WordBits ? WordBits - start : ones; // the shift brings in zeros: never more than the word
                        long granule = wordBase + start;
                        if (granule == runEnd)
                        {
                            runEnd += ones;
                        }
                        else
                        {
                            if (runEnd > runStart)
                            {
                                ranges.Add(new DirtyRange(runStart * GranuleBytes, (runEnd - runStart) * GranuleBytes));
                            }
                            (runStart, runEnd) = (granule, granule + ones);
                        }
                        value = start + ones >= WordBits ? 0 : value & (ulong.MaxValue << (start + ones));
                    }
                }
            }
            if (runEnd > runStart)
            {
                ranges.Add(new DirtyRange(runStart * GranuleBytes, (runEnd - runStart) * GranuleBytes));
            }
        }
        return ranges;
    }

    public void Clear()
    {
        lock (_lock)
        {
            _chunks.Clear();
            Interlocked.Exchange(ref _dirtyGranules, 0);
        }
    }

    /// <summary>One 1 MiB chunk's granules, inline in the dictionary's entry: touching a new chunk allocates nothing of its own.</summary>
    [InlineArray(GranulesPerChunk / WordBits)]
    private struct ChunkBits
    {
        private ulong _word;

        /// <summary>Sets granules [<paramref name="from"/>, <paramref name="to"/>) and returns how many were clear before.</summary>
        public int Set(int from, int to)
        {
            int added = 0;
            for (int word = from / WordBits; word * WordBits < to; word++)
            {
                int lo = Math.Max(from - word * WordBits, 0);
                int hi = Math.Min(to - word * WordBits, WordBits);
                ulong mask = (hi == WordBits ? ulong.MaxValue : (1UL << hi) - 1) & (ulong.MaxValue << lo);
                added += BitOperations.PopCount(mask & ~this[word]);
                this[word] |= mask;
            }
            return added;
        }
    }
}

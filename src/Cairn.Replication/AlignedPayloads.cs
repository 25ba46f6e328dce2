using System.Runtime.InteropServices;

namespace Cairn.Replication;

/// <summary>
/// Payload buffers for a replica connection's large requests, 4 KiB-aligned in memory, shared by every connection of
/// the process. A rebuild's copy (1 MiB, UNCACHED) is written by the replica's block store with O_DIRECT, which wants
/// an aligned source: from an ordinary array the block store first copies each write into an aligned buffer of its own.
/// Receiving the payload here lets the write go straight from the bytes the socket delivered. The arrays live on the
/// pinned object heap, so their alignment holds for their life; at most <see cref="MaxBuffers"/> are ever allocated
/// (lazily, reused for good): when all are in use, the caller takes an ordinary pooled array, which is only slower.
/// </summary>
internal static class AlignedPayloads
{
    /// <summary>O_DIRECT's alignment on the block devices Cairn runs on (and the block store's block).</summary>
    public const int Alignment = 4096;

    /// <summary>The largest payload one buffer holds: a rebuild's copy request (<see cref="ReplicatedVolume.RebuildChunkBytes"/>).</summary>
    public const int BufferBytes = ReplicatedVolume.RebuildChunkBytes;

    /// <summary>Enough for two rebuilds' copy windows in flight to one node at once (16 MiB, allocated only if used).</summary>
    public const int MaxBuffers = 2 * ReplicatedVolume.RebuildWindowBytes / BufferBytes;

    private static readonly Buffer?[] Spares = new Buffer?[MaxBuffers];
    private static int _allocated;

    /// <summary>Buffers allocated so far in the process (tests check that reuse keeps it put).</summary>
    internal static int Allocated => Volatile.Read(ref _allocated);

    /// <summary>A spare buffer, a new one while fewer than <see cref="MaxBuffers"/> exist, else null.</summary>
    public static Buffer? TryRent()
    {
        for (int i = 0; i < Spares.Length; i++)
        {
            if (Interlocked.Exchange(ref Spares[i], null) is { } spare)
            {
                return spare;
            }
        }
        if (Interlocked.Increment(ref _allocated) > MaxBuffers)
        {
            Interlocked.Decrement(ref _allocated);
            return null;
        }
        return new Buffer();
    }

    /// <summary>Gives a buffer back (there is a place for every buffer; should a race ever miss one, it is dropped).</summary>
    public static void Return(Buffer buffer)
    {
        for (int i = 0; i < Spares.Length; i++)
        {
            if (Interlocked.CompareExchange(ref Spares[i], buffer, null) is null)
            {
                return;
            }
        }
        Interlocked.Decrement(ref _allocated);
    }

    /// <summary>One pinned array with an aligned stretch of <see cref="BufferBytes"/> inside it.</summary>
    public sealed class Buffer
    {
        private readonly byte[] _array = GC.AllocateUninitializedArray<byte>(BufferBytes + Alignment, pinned: true);
        private readonly int _start;

        public Buffer()
        {
            long address = Marshal.UnsafeAddrOfPinnedArrayElement(_array, 0);
            _start = (int)((Alignment - (address & (Alignment - 1))) & (Alignment - 1));
        }

        /// <summary>The first <paramref name="bytes"/> of the aligned stretch.</summary>
        public Memory<byte> Memory(int bytes) => _array.AsMemory(_start, bytes);
    }
}

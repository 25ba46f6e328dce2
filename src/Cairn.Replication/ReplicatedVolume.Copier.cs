using System.Buffers;
using System.Runtime.ExceptionServices;
using Cairn.Core;

namespace Cairn.Replication;

// The rebuild's copier: it walks the ranges to copy window by window. Each window is held exclusively in the region
// gate while its requests are in flight together (reading the owner, the network and the replica's writes overlap),
// and is released only once the replica answered all of them, so a live change can never be overtaken by older data.
public sealed partial class ReplicatedVolume
{
    /// <summary>The most one copy request carries.</summary>
    public const int RebuildChunkBytes = 1 << 20;

    /// <summary>
    /// The most the copier holds from live changes at once (a whole hole or zero run excepted): a live change to the
    /// window waits for one window's copy, far less than the protocol's 8 MiB requests would cost one by one.
    /// </summary>
    public const int RebuildWindowBytes = 8 << 20;

    /// <summary>Copy requests in flight at once: a window's worth of chunks.</summary>
    private const int CopyRequestsInFlight = RebuildWindowBytes / RebuildChunkBytes;

    /// <summary>The longest hole or zero run erased in one request (and one window of the region gate).</summary>
    private const long MaxEraseBytes = 1L << 30;

    private const int ExtentBatch = 64;

    /// <summary>The smallest copy request sent <see cref="ReplicaFlags.Uncached"/>: 16 blocks of the replica's store.</summary>
    public const int UncachedCopyMinBytes = 64 << 10;

    /// <summary>
    /// A copy of at least <see cref="UncachedCopyMinBytes"/> goes UNCACHED: the replica writes it past its page cache,
    /// which then keeps what its clients read. A smaller one (a delta resync's scattered 4 KiB blocks) goes through the
    /// cache: past it, each would wait for a round trip to the disk that writeback merges with its neighbours', for
    /// little cache saved (a delta resync after an outage of 4 KiB random writes took 0.9-1.2 s uncached, 0.2-0.5 s not).
    /// </summary>
    private static ReplicaFlags CopyFlags(int bytes) => bytes >= UncachedCopyMinBytes ? ReplicaFlags.Uncached : ReplicaFlags.None;

    private async Task CopyAsync(RebuildSession session, IReadOnlyList<DirtyRange> ranges, long total, IProgress<RebuildProgress>? progress,
        CancellationToken cancellationToken)
    {
        using var pipeline = new CopyPipeline(session, total, progress);
        var extents = new AllocationExtent[ExtentBatch];
        var window = new List<DirtyRange>();
        int next = 0;
        long at = ranges.Count > 0 ? ranges[0].Offset : 0;
        while (next < ranges.Count)
        {
            long end = await WindowEndAsync(at, ranges[next].End, extents, cancellationToken);
            // The window takes the rest of the current range up to its end, then every later range that starts in it.
            window.Clear();
            for (; next < ranges.Count && ranges[next].Offset < end; next++)
            {
                long start = Math.Max(at, ranges[next].Offset);
                window.Add(new DirtyRange(start, Math.Min(end, ranges[next].End) - start));
                if (ranges[next].End > end)
                {
                    break;
                }
            }
            await CopyWindowAsync(session, window, pipeline, extents, cancellationToken);
            at = next < ranges.Count ? Math.Max(end, ranges[next].Offset) : end;
        }
    }

    /// <summary>
    /// Where the window starting at <paramref name="at"/> ends: the next <see cref="RebuildWindowBytes"/> boundary, or
    /// the end of a hole or zero run that starts at <paramref name="at"/> and reaches past it (erased in one request).
    /// The first probe stops at that boundary and only a run that fills the window is followed further: a lookup walks
    /// the map block by block until the state changes, so probing the whole <see cref="MaxEraseBytes"/> at once walked
    /// up to 1 GiB of map for every 8 MiB window of data (11% of the owner's CPU in a 3 GiB rebuild).
    /// </summary>
    private async ValueTask<long> WindowEndAsync(long at, long limit, AllocationExtent[] extents, CancellationToken cancellationToken)
    {
        long end = (at / RebuildWindowBytes + 1) * RebuildWindowBytes;
        if (limit <= end)
        {
            return end; // the range ends within this window: nothing to follow past it
        }
        int probed = await _local.GetAllocationAsync(at, end - at, extents.AsMemory(0, 1), cancellationToken);
        if (probed == 0 || extents[0].State == AllocationState.Data || extents[0].LengthBytes < end - at)
        {
            return end;
        }
        var state = extents[0].State;
        long runLimit = Math.Min(limit, at + MaxEraseBytes);
        probed = await _local.GetAllocationAsync(end, runLimit - end, extents.AsMemory(0, 1), cancellationToken);
        return probed > 0 && extents[0].State == state ? end + Math.Min(extents[0].LengthBytes, runLimit - end) : end;
    }

    /// <summary>
    /// Copies the ranges of one window. Holds the window exclusively from the first read until the replica answered
    /// every request, and reads its allocation only once holding it: a live change that turned a hole into data
    /// meanwhile has reached the replica already and is copied, not erased.
    /// </summary>
    private async Task CopyWindowAsync(RebuildSession session, List<DirtyRange> window, CopyPipeline pipeline, AllocationExtent[] extents,
        CancellationToken cancellationToken)
    {
        ThrowIfFenced();
        if (session.Failure is { } failure)
        {
            throw new ReplicaRebuildException(failure);
        }
        await session.Gate.EnterCopyAsync(window[0].Offset, window[^1].End, cancellationToken);
        try
        {
            foreach (var range in window)
            {
                await CopyRangeAsync(session, range, pipeline, extents, cancellationToken);
            }
        }
        catch
        {
            await pipeline.AbandonAsync(); // every request answered before the window is released, even on failure
            session.Gate.ExitCopy();
            throw;
        }
        try
        {
            await pipeline.DrainAsync();
        }
        finally
        {
            session.Gate.ExitCopy();
        }
    }

    private async Task CopyRangeAsync(RebuildSession session, DirtyRange range, CopyPipeline pipeline, AllocationExtent[] extents,
        CancellationToken cancellationToken)
    {
        for (long position = range.Offset; position < range.End;)
        {
            int count = await _local.GetAllocationAsync(position, range.End - position, extents, cancellationToken);
            if (count == 0)
            {
                throw new ReplicaRebuildException($"the local device described no allocation at offset {position}");
            }
            for (int i = 0; i < count && position < range.End; i++)
            {
                long length = Math.Min(extents[i].LengthBytes, range.End - position);
                if (length <= 0)
                {
                    throw new ReplicaRebuildException($"the local device described an empty extent at offset {position}");
                }
                await CopyExtentAsync(session, position, length, extents[i].State, pipeline, cancellationToken);
                position += length;
            }
        }
    }

    private async Task CopyExtentAsync(RebuildSession session, long offset, long length, AllocationState state, CopyPipeline pipeline,
        CancellationToken cancellationToken)
    {
        if (state != AllocationState.Data)
        {
            await pipeline.ReserveAsync();
            var (op, flags) = state == AllocationState.Hole ? (ReplicaOp.Trim, ReplicaFlags.None) : (ReplicaOp.WriteZeroes, ReplicaFlags.NoHole);
            pipeline.Add(SendToTargetAsync(session, op, flags, offset, length, default, cancellationToken), length, data: false);
            return;
        }
        for (long done = 0; done < length; done += RebuildChunkBytes)
        {
            var piece = (await pipeline.ReserveAsync())[..(int)Math.Min(RebuildChunkBytes, length - done)];
            await _local.ReadAsync(offset + done, piece, cancellationToken);
            pipeline.Add(SendToTargetAsync(session, ReplicaOp.Write, CopyFlags(piece.Length), offset + done, piece.Length, piece, cancellationToken),
                piece.Length, data: true);
        }
    }

    /// <summary>
    /// The copy requests in flight, oldest first, each with its own chunk of one pooled buffer (a chunk is reused only
    /// after its request was answered). Counts what the replica acknowledged and reports progress as requests complete.
    /// </summary>
    private sealed class CopyPipeline(RebuildSession session, long total, IProgress<RebuildProgress>? progress) : IDisposable
    {
        private readonly byte[] _buffer = ArrayPool<byte>.Shared.Rent(CopyRequestsInFlight * RebuildChunkBytes);
        private readonly ValueTask[] _sends = new ValueTask[CopyRequestsInFlight];
        private readonly long[] _lengths = new long[CopyRequestsInFlight];
        private readonly bool[] _data = new bool[CopyRequestsInFlight];
        private int _oldest;
        private int _count;
        private long _done;

        /// <summary>Waits for a free slot (completing the oldest request if all are in flight) and returns its chunk of the buffer.</summary>
        public async ValueTask<Memory<byte>> ReserveAsync()
        {
            if (_count == CopyRequestsInFlight)
            {
                await CompleteOldestAsync();
            }
            return _buffer.AsMemory(Slot(_count) * RebuildChunkBytes, RebuildChunkBytes);
        }

        /// <summary>Puts a started request into the slot <see cref="ReserveAsync"/> returned.</summary>
        public void Add(ValueTask send, long length, bool data)
        {
            int slot = Slot(_count);
            (_sends[slot], _lengths[slot], _data[slot]) = (send, length, data);
            _count++;
        }

        /// <summary>Waits for every request in flight; throws the first failure once all were answered.</summary>
        public async ValueTask DrainAsync()
        {
            Exception? failure = null;
            while (_count > 0)
            {
                try
                {
                    await CompleteOldestAsync();
                }
                catch (Exception e)
                {
                    failure ??= e;
                }
            }
            if (failure is not null)
            {
                ExceptionDispatchInfo.Throw(failure);
            }
        }

        /// <summary>Waits for every request in flight after an earlier failure, which is the one that counts.</summary>
        public async ValueTask AbandonAsync()
        {
            try
            {
                await DrainAsync();
            }
            catch (Exception)
            {
                // The window failed already: the caller rethrows that failure.
            }
        }

        private async ValueTask CompleteOldestAsync()
        {
            var (send, length, data) = (_sends[_oldest], _lengths[_oldest], _data[_oldest]);
            _sends[_oldest] = default;
            _oldest = (_oldest + 1) % CopyRequestsInFlight;
            _count--;
            await send;
            if (data)
            {
                session.CountData(length);
            }
            else
            {
                session.CountErased(length);
            }
            _done += length;
            progress?.Report(new RebuildProgress(_done, total));
        }

        private int Slot(int index) => (_oldest + index) % CopyRequestsInFlight;

        public void Dispose() => ArrayPool<byte>.Shared.Return(_buffer);
    }
}

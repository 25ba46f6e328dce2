using Cairn.Core;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// One node's drive, in 4 KiB blocks, with a volatile write cache: a write lands in the cache; FLUSH makes every write
/// that completed before it durable, and a FUA write is durable when it completes. A crash keeps, per block, the
/// durable content or one of the cached writes after it (the cache may have written some back), chosen by the seed —
/// or, in the harsher mode, drops the whole cache. Operations take a seeded latency and belong to one incarnation of
/// the node: those of an incarnation that crashed never complete and never land.
/// </summary>
internal sealed class SimDisk
{
    public const int BlockBytes = 4096;

    private readonly SimScheduler _sim;
    private readonly byte[]?[] _durable; // null: zeros
    private readonly List<(long Sequence, byte[]? Content)>[] _cached;
    private readonly long _latencyUsMax;
    private long _writeSequence;

    public SimDisk(SimScheduler sim, string node, int blocks, long latencyUsMax)
    {
        _sim = sim;
        Node = node;
        _durable = new byte[]?[blocks];
        _cached = [.. Enumerable.Range(0, blocks).Select(_ => new List<(long, byte[]?)>())];
        _latencyUsMax = latencyUsMax;
    }

    public string Node { get; }

    public int Blocks => _durable.Length;

    /// <summary>Bumped by every crash: operations of an older incarnation are abandoned.</summary>
    public int Incarnation { get; private set; }

    /// <summary>Test hook for the checker's self-test: a drive that acknowledges writes and keeps nothing.</summary>
    public bool DropsWrites { get; set; }

    public IBlockDevice ViewFor(int incarnation) => new View(this, incarnation);

    /// <summary>Power loss: the cache is lost, all of it or (per block) all but a seeded prefix of it.</summary>
    public void Crash(bool loseWholeCache)
    {
        Incarnation++;
        int lost = 0;
        for (int b = 0; b < _cached.Length; b++)
        {
            var cached = _cached[b];
            if (cached.Count == 0)
            {
                continue;
            }
            int kept = loseWholeCache ? 0 : _sim.Rng.Next(cached.Count + 1);
            if (kept > 0)
            {
                _durable[b] = cached[kept - 1].Content;
            }
            lost += cached.Count - kept;
            cached.Clear();
        }
        _sim.Trace($"disk {Node}: power lost, {lost} cached writes gone");
    }

    /// <summary>What a block holds now (cache first), for the final audit only.</summary>
    public byte[]? Peek(int block) => _cached[block] is { Count: > 0 } c ? c[^1].Content : _durable[block];

    private byte[]? Current(int block) => Peek(block);

    private void Land(int block, byte[]? content, bool durable)
    {
        if (DropsWrites)
        {
            return;
        }
        var cached = _cached[block];
        if (durable)
        {
            cached.Clear(); // a FUA write supersedes whatever was cached for this block
            _durable[block] = content;
        }
        else
        {
            cached.Add((++_writeSequence, content));
        }
    }

    private void MakeDurable(long upToSequence)
    {
        for (int b = 0; b < _cached.Length; b++)
        {
            var cached = _cached[b];
            int n = 0;
            while (n < cached.Count && cached[n].Sequence <= upToSequence)
            {
                n++;
            }
            if (n > 0)
            {
                _durable[b] = cached[n - 1].Content;
                cached.RemoveRange(0, n);
            }
        }
    }

    private sealed class View(SimDisk disk, int incarnation) : IBlockDevice
    {
        public long SizeBytes => (long)disk.Blocks * BlockBytes;

        public int PreferredBlockSizeBytes => BlockBytes;

        public bool IsReadOnly => false;

        public async ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
        {
            var (first, count) = Blocks(offset, destination.Length);
            await Settle();
            for (int i = 0; i < count; i++)
            {
                var target = destination.Span.Slice(i * BlockBytes, BlockBytes);
                if (disk.Current(first + i) is { } content)
                {
                    content.CopyTo(target);
                }
                else
                {
                    target.Clear();
                }
            }
        }

        public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            var (first, count) = Blocks(offset, source.Length);
            byte[][] contents = [.. Enumerable.Range(0, count).Select(i => source.Slice(i * BlockBytes, BlockBytes).ToArray())];
            await Settle();
            for (int i = 0; i < count; i++)
            {
                disk.Land(first + i, contents[i], (flags & WriteFlags.ForceUnitAccess) != 0);
            }
        }

        public async ValueTask FlushAsync(CancellationToken cancellationToken = default)
        {
            long upTo = disk._writeSequence; // writes that completed before the flush was issued
            await Settle();
            disk.MakeDurable(upTo);
        }

        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            ZeroAsync(offset, length, flags);

        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            ZeroAsync(offset, length, flags);

        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
        {
            extents.Span[0] = new AllocationExtent(Math.Min(length, SizeBytes - offset), AllocationState.Data);
            return ValueTask.FromResult(1);
        }

        private async ValueTask ZeroAsync(long offset, long length, WriteFlags flags)
        {
            var (first, count) = Blocks(offset, length);
            await Settle();
            for (int i = 0; i < count; i++)
            {
                disk.Land(first + i, null, (flags & WriteFlags.ForceUnitAccess) != 0);
            }
        }

        /// <summary>Waits the drive's latency; an operation of a crashed incarnation never completes (its node is gone).</summary>
        private async Task Settle()
        {
            await disk._sim.Delay(disk._sim.Rng.NextInt64(1, disk._latencyUsMax + 1));
            if (disk.Incarnation != incarnation)
            {
                await new TaskCompletionSource().Task;
            }
        }

        /// <summary>The simulated drive takes whole blocks only: the workload never issues anything else.</summary>
        private (int First, int Count) Blocks(long offset, long length)
        {
            if (offset % BlockBytes != 0 || length % BlockBytes != 0 || offset < 0 || offset + length > SizeBytes)
            {
                throw new BlockDeviceException(BlockError.InvalidArgument, $"{disk.Node}: unaligned or out-of-range IO at {offset} (+{length})");
            }
            return ((int)(offset / BlockBytes), (int)(length / BlockBytes));
        }
    }
}

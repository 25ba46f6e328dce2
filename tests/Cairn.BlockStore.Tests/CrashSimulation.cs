using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore.Tests;

/// <summary>
/// One seeded run: random writes (aligned and not, some FUA), trims, zeroes, flushes, and create/delete of a
/// second volume whose freed blocks get reused, on a <see cref="SimulatedMedium"/> that crashes at a random
/// mutation and tears unsynced writes per sector. After every crash the pool must open, and each block must read
/// a state it really held, no older than the last state made durable (by a completed flush or FUA write).
/// Deterministic: the same seed always replays the same run.
/// </summary>
internal static class CrashSimulation
{
    private const int Block = 4096;
    private const int VolumeBlocks = 24;

    public static void Run(int seed, int rounds = 3)
    {
        var rng = new Random(seed);
        var medium = new SimulatedMedium();
        var options = TestPools.Deterministic(
            checkpointJournalBytes: rng.Next(2) == 0 ? 2048 : 1 << 20,
            maxBatchBytes: rng.Next(2) == 0 ? 200 : 1 << 20,
            punchHoleMinBlocks: 2);
        long size = (long)VolumeBlocks * Block - rng.Next(Block);
        var pool = BlockPool.Create(medium, "crash", 96 * Block, options);
        pool.CreateVolume("v", size);
        var model = new Model(size);
        bool? otherExists = false;
        for (int round = 0; round < rounds; round++)
        {
            medium.ScheduleCrash(rng.Next(0, 250));
            try
            {
                RunOps(pool, model, rng, ref otherExists);
            }
            catch (SimulatedCrashException)
            {
                // the pool is abandoned mid-operation, like a process killed by a power cut
            }
            medium.Crash(rng);
            pool = Recover(medium, options, rng);
            Verify(pool, model, ref otherExists, $"round {round}");
        }
        pool.Dispose();
        using var final = BlockPool.Open(medium, options);
        Verify(final, model, ref otherExists, "clean reopen");
    }

    /// <summary>Opens after a crash; sometimes crashes again in the middle of recovery first (truncating a torn journal tail, starting a journal).</summary>
    private static BlockPool Recover(SimulatedMedium medium, PoolOptions options, Random rng)
    {
        while (rng.Next(3) == 0)
        {
            medium.ScheduleCrash(rng.Next(0, 4));
            try
            {
                BlockPool.Open(medium, options); // abandoned if it completes: the crash may still hit later mutations
            }
            catch (SimulatedCrashException)
            {
            }
            medium.Crash(rng);
        }
        return BlockPool.Open(medium, options);
    }

    private static void RunOps(BlockPool pool, Model model, Random rng, ref bool? otherExists)
    {
        var v = pool.Volume("v");
        int ops = rng.Next(20, 80);
        for (int i = 0; i < ops; i++)
        {
            int kind = rng.Next(100);
            if (kind < 50)
            {
                var (offset, length) = RandomRange(rng, model.SizeBytes);
                var data = TestPools.Pattern(length, rng.Next());
                bool fua = rng.Next(6) == 0;
                var touched = model.Stage(offset, data);
                Await(v.WriteAsync(offset, data, fua ? WriteFlags.ForceUnitAccess : WriteFlags.None));
                if (fua)
                {
                    model.MarkDurable(touched);
                }
            }
            else if (kind < 62)
            {
                var (offset, length) = RandomRange(rng, model.SizeBytes);
                bool fua = rng.Next(6) == 0;
                var touched = model.Stage(offset, new byte[length]);
                var flags = rng.Next(2) == 0 ? ZeroFlags.NoHole : ZeroFlags.None;
                Await(rng.Next(2) == 0
                    ? v.TrimAsync(offset, length, fua ? WriteFlags.ForceUnitAccess : WriteFlags.None)
                    : v.WriteZeroesAsync(offset, length, flags, fua ? WriteFlags.ForceUnitAccess : WriteFlags.None));
                if (fua)
                {
                    model.MarkDurable(touched);
                }
            }
            else if (kind < 80)
            {
                Await(v.FlushAsync());
                model.MarkAllDurable();
            }
            else
            {
                OtherVolumeOp(pool, rng, ref otherExists);
            }
        }
    }

    /// <summary>A second volume that comes and goes, so its blocks are freed and reused by "v".</summary>
    private static void OtherVolumeOp(BlockPool pool, Random rng, ref bool? otherExists)
    {
        if (pool.TryGetVolume("w", out var w))
        {
            if (rng.Next(3) == 0)
            {
                otherExists = null; // unknown until DeleteVolume returns
                pool.DeleteVolume("w");
                otherExists = false;
                return;
            }
            var (offset, length) = RandomRange(rng, w!.SizeBytes);
            Await(w.WriteAsync(offset, TestPools.Pattern(length, rng.Next())));
            return;
        }
        otherExists = null;
        pool.CreateVolume("w", 8 * Block);
        otherExists = true;
    }

    private static void Verify(BlockPool pool, Model model, ref bool? otherExists, string when)
    {
        Check(pool.TryGetVolume("v", out var v), $"{when}: volume 'v' is missing");
        bool hasOther = pool.TryGetVolume("w", out var w);
        Check(otherExists is null || otherExists == hasOther, $"{when}: volume 'w' exists={hasOther}, expected {otherExists}");
        otherExists = hasOther;
        long used = 0;
        if (hasOther)
        {
            var all = new byte[w!.SizeBytes];
            Await(w.ReadAsync(0, all)); // must verify: no checksum error anywhere
            used += w.AllocatedBytes;
        }
        var whole = new byte[model.SizeBytes];
        Await(v!.ReadAsync(0, whole));
        for (int b = 0; b < model.Blocks; b++)
        {
            model.Settle(b, whole.AsSpan(b * Block, (int)Math.Min(Block, model.SizeBytes - (long)b * Block)), when);
        }
        used += v.AllocatedBytes;
        Check(pool.UsedBytes == used, $"{when}: pool UsedBytes {pool.UsedBytes} != volumes' allocated {used}");
    }

    private static (long Offset, int Length) RandomRange(Random rng, long sizeBytes)
    {
        long offset;
        int length;
        if (rng.Next(2) == 0)
        {
            offset = rng.Next((int)(sizeBytes / Block)) * (long)Block;
            length = Block * rng.Next(1, 6);
        }
        else
        {
            offset = rng.Next((int)sizeBytes);
            length = rng.Next(1, 3 * Block);
        }
        return (offset, (int)Math.Min(length, sizeBytes - offset));
    }

    private static void Await(ValueTask task) => task.AsTask().GetAwaiter().GetResult();

    private static void Check(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }

    /// <summary>Per block: every state it may legitimately hold, in order, and the index of the last durable one.</summary>
    private sealed class Model
    {
        private readonly List<byte[]>[] _states;
        private readonly int[] _durable;

        public Model(long sizeBytes)
        {
            SizeBytes = sizeBytes;
            Blocks = (int)((sizeBytes + Block - 1) / Block);
            _states = new List<byte[]>[Blocks];
            _durable = new int[Blocks];
            for (int b = 0; b < Blocks; b++)
            {
                _states[b] = [new byte[Block]];
            }
        }

        public long SizeBytes { get; }
        public int Blocks { get; }

        /// <summary>Records the states an operation will produce before it runs (a crash mid-operation may leave them).</summary>
        public List<int> Stage(long offset, byte[] data)
        {
            var touched = new List<int>();
            long end = offset + data.Length;
            for (long pos = offset; pos < end;)
            {
                int b = (int)(pos / Block);
                int inBlock = (int)(pos % Block);
                int n = (int)Math.Min(Block - inBlock, end - pos);
                var next = (byte[])_states[b][^1].Clone();
                data.AsSpan((int)(pos - offset), n).CopyTo(next.AsSpan(inBlock));
                _states[b].Add(next);
                touched.Add(b);
                pos += n;
            }
            return touched;
        }

        public void MarkDurable(List<int> blocks)
        {
            foreach (int b in blocks)
            {
                _durable[b] = _states[b].Count - 1;
            }
        }

        public void MarkAllDurable()
        {
            for (int b = 0; b < Blocks; b++)
            {
                _durable[b] = _states[b].Count - 1;
            }
        }

        /// <summary>Checks what block <paramref name="b"/> read after recovery, then makes that the only (durable) state.</summary>
        public void Settle(int b, ReadOnlySpan<byte> actual, string when)
        {
            var states = _states[b];
            int match = -1;
            for (int k = states.Count - 1; k >= 0 && match < 0; k--)
            {
                if (states[k].AsSpan(0, actual.Length).SequenceEqual(actual))
                {
                    match = k;
                }
            }
            if (match < _durable[b])
            {
                throw new InvalidOperationException(match < 0
                    ? $"{when}: block {b} holds bytes it never held (foreign or garbage data); {states.Count} known states"
                    : $"{when}: block {b} lost a durable write: reads state {match}, last durable state is {_durable[b]}");
            }
            var settled = new byte[Block];
            actual.CopyTo(settled);
            states.Clear();
            states.Add(settled);
            _durable[b] = 0;
        }
    }
}

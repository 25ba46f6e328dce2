using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore.Tests;

/// <summary>
/// One seeded run: random writes (aligned and not, some FUA, some uncached as a rebuild's copy), trims, zeroes, flushes, grows, snapshot create and
/// delete, clones, reverts, and create/delete of another volume whose freed blocks get reused, on a
/// <see cref="SimulatedMedium"/> that crashes at a random mutation (also during recovery) and tears unsynced writes per
/// sector. After every crash the pool must open; each volume block must read a state it really held, no older than
/// the last state made durable (a completed flush, FUA write, or snapshot/clone/revert, which sync); every snapshot
/// must read exactly what its volume held when it was taken; the allocator must match the maps. Injected read and write
/// errors on the data file must surface as IO errors, never as wrong data. The same seed always replays the same run.
/// </summary>
internal static class CrashSimulation
{
    private const int Block = 4096;
    private const int VolumeBlocks = 24;
    private const int MaxBlocks = 40;
    private const int MaxSnapshots = 5;
    private const int MaxClones = 2;

    /// <param name="trace">Receives every operation and crash (replaying a failing seed); null = silent.</param>
    public static void Run(int seed, int rounds = 3, Action<string>? trace = null)
    {
        var rng = new Random(seed);
        var medium = new SimulatedMedium();
        var options = TestPools.Deterministic(
            checkpointJournalBytes: rng.Next(2) == 0 ? 2048 : 1 << 20,
            maxBatchBytes: rng.Next(2) == 0 ? 200 : 1 << 20,
            punchHoleMinBlocks: 2);
        var world = new World((long)VolumeBlocks * Block - rng.Next(Block)) { Trace = trace };
        var pool = BlockPool.Create(medium, "crash", 256 * Block, options);
        pool.CreateVolume("v", world.Volumes["v"].SizeBytes);
        for (int round = 0; round < rounds; round++)
        {
            medium.ScheduleCrash(rng.Next(0, 300));
            try
            {
                new Driver(pool, world, medium, rng).RunOps();
                medium.ScheduleCrash(-1);
                Audit(pool, $"round {round} before the crash");
                world.VerifyLive(pool, $"round {round} before the crash");
            }
            catch (SimulatedCrashException)
            {
                // the pool is abandoned mid-operation, like a process killed by a power cut
            }
            world.Trace?.Invoke($"-- crash after {medium.MutationCount} mutations");
            medium.Crash(rng);
            pool = Recover(medium, options, rng);
            world.Settle(pool, $"round {round}");
            Audit(pool, $"round {round}");
            CheckInjectedReadErrors(pool, world, medium, rng, $"round {round}");
        }
        pool.Dispose();
        using var final = BlockPool.Open(medium, options);
        world.Settle(final, "clean reopen");
        Audit(final, "clean reopen");
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

    /// <summary>The blocks the maps name are exactly the blocks in use: nothing leaked, nothing freed that a map still holds.</summary>
    private static void Audit(BlockPool pool, string when)
    {
        var (referenced, used) = pool.AuditSpace();
        Check(referenced == used, $"{when}: the maps name {referenced} blocks but {used} are in use");
    }

    /// <summary>Makes reads of a random part of the data file fail; every block must then read right or fail with EIO.</summary>
    private static void CheckInjectedReadErrors(BlockPool pool, World world, SimulatedMedium medium, Random rng, string when)
    {
        if (rng.Next(4) != 0)
        {
            return;
        }
        medium.InjectFault("data.cairn", rng.Next(64) * (long)Block, Block * rng.Next(1, 16), reads: true, writes: false);
        try
        {
            world.VerifyLive(pool, $"{when} with read errors injected", tolerateIoErrors: true);
        }
        finally
        {
            medium.ClearFaults();
        }
    }

    internal static void Await(ValueTask task) => task.AsTask().GetAwaiter().GetResult();

    internal static void Check(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }

    /// <summary>Applies one round of random operations to the pool and records in the world what each may have left behind.</summary>
    private sealed class Driver(BlockPool pool, World world, SimulatedMedium medium, Random rng)
    {
        public void RunOps()
        {
            int ops = rng.Next(20, 80);
            bool faults = rng.Next(8) == 0;
            if (faults)
            {
                // A failing spot in the data file: writes to it fail with EIO; the pool must not return wrong data later.
                medium.InjectFault("data.cairn", rng.Next(96) * (long)Block, Block * rng.Next(1, 8), reads: false, writes: true);
            }
            try
            {
                for (int i = 0; i < ops; i++)
                {
                    try
                    {
                        RunOne(rng.Next(100));
                    }
                    catch (BlockDeviceException ex) when (faults && ex.Error == BlockError.Io)
                    {
                        // The injected write error surfaced as an error. Part of a multi-block write may have landed:
                        // what each block holds now must be one of its known states, and is the state from here on.
                        medium.ClearFaults();
                        world.SettleLive(pool);
                        faults = false;
                    }
                }
            }
            finally
            {
                medium.ClearFaults();
            }
        }

        private void RunOne(int kind)
        {
            switch (kind)
            {
                case < 40: Write(); break;
                case < 50: Zero(); break;
                case < 62: Flush(); break;
                case < 68: Grow(); break;
                case < 78: CreateSnapshot(); break;
                case < 84: DeleteSnapshot(); break;
                case < 88: Clone(); break;
                case < 91: Revert(); break;
                default: OtherVolumeOp(); break;
            }
        }

        private string PickVolume()
        {
            var names = world.Volumes.Where(kv => kv.Value.Exists == true).Select(kv => kv.Key).Order(StringComparer.Ordinal).ToList();
            return rng.Next(3) == 0 ? names[rng.Next(names.Count)] : "v";
        }

        private void Write()
        {
            string name = PickVolume();
            var model = world.Volumes[name];
            var (offset, length) = RandomRange(model.SizeBytes);
            var data = TestPools.Pattern(length, rng.Next());
            var flags = (rng.Next(6) == 0 ? WriteFlags.ForceUnitAccess : WriteFlags.None) | (rng.Next(3) == 0 ? WriteFlags.Uncached : WriteFlags.None);
            bool fua = (flags & WriteFlags.ForceUnitAccess) != 0;
            var touched = model.Stage(offset, data);
            world.Trace?.Invoke($"write {name} [{offset}, +{length}){(fua ? " FUA" : "")}{((flags & WriteFlags.Uncached) != 0 ? " uncached" : "")}");
            Await(pool.Volume(name).WriteAsync(offset, data, flags));
            if (fua)
            {
                model.MarkDurable(touched);
            }
        }

        private void Zero()
        {
            string name = PickVolume();
            var model = world.Volumes[name];
            var v = pool.Volume(name);
            var (offset, length) = RandomRange(model.SizeBytes);
            bool fua = rng.Next(6) == 0;
            var touched = model.Stage(offset, new byte[length]);
            world.Trace?.Invoke($"zero {name} [{offset}, +{length}){(fua ? " FUA" : "")}");
            var flags = fua ? WriteFlags.ForceUnitAccess : WriteFlags.None;
            Await(rng.Next(2) == 0
                ? v.TrimAsync(offset, length, flags)
                : v.WriteZeroesAsync(offset, length, rng.Next(2) == 0 ? ZeroFlags.NoHole : ZeroFlags.None, flags));
            if (fua)
            {
                model.MarkDurable(touched);
            }
        }

        private void Flush()
        {
            world.Trace?.Invoke("flush");
            Await(pool.Volume(PickVolume()).FlushAsync());
            world.MarkAllDurable();
        }

        private void Grow()
        {
            string name = PickVolume();
            var model = world.Volumes[name];
            long size = Math.Min((long)MaxBlocks * Block, model.SizeBytes + rng.Next(1, 3 * Block));
            if (size == model.SizeBytes)
            {
                return; // a grow to the same size changes nothing, so it need not sync either
            }
            world.Trace?.Invoke($"grow {name} to {size}");
            model.Grow(size); // a crash may leave either size; the new blocks read as zeros
            pool.Volume(name).Grow(size);
            world.MarkAllDurable(); // a grow syncs: from here the size is durable
        }

        private void CreateSnapshot()
        {
            string volume = PickVolume();
            if (world.SnapshotsOf(volume).Count() >= MaxSnapshots)
            {
                DeleteSnapshot();
                return;
            }
            var snapshot = new SnapshotModel(volume, $"s{world.NextId++}", world.Volumes[volume].Latest()) { Exists = null };
            world.Snapshots.Add(snapshot);
            world.Trace?.Invoke($"snapshot {volume}@{snapshot.Name}");
            pool.CreateSnapshot(volume, snapshot.Name);
            snapshot.Exists = true;
            world.MarkAllDurable();
        }

        private void DeleteSnapshot()
        {
            var candidates = world.Snapshots.Where(s => s.Exists == true).ToList();
            if (candidates.Count == 0)
            {
                return;
            }
            var snapshot = candidates[rng.Next(candidates.Count)];
            snapshot.Exists = null;
            world.Trace?.Invoke($"delete snapshot {snapshot.Volume}@{snapshot.Name}");
            pool.DeleteSnapshot(snapshot.Volume, snapshot.Name);
            snapshot.Exists = false;
            world.MarkAllDurable();
        }

        private void Clone()
        {
            var sources = world.Snapshots.Where(s => s.Exists == true).ToList();
            if (sources.Count == 0 || world.Volumes.Count(kv => kv.Value.Exists != false && kv.Key != "v") >= MaxClones)
            {
                return;
            }
            var source = sources[rng.Next(sources.Count)];
            string name = $"c{world.NextId++}";
            var clone = new VolumeModel(source.SizeBytes, source.Content) { Exists = null };
            world.Volumes.Add(name, clone);
            world.Trace?.Invoke($"clone {name} from {source.Volume}@{source.Name}");
            pool.CloneVolume(name, source.Volume, source.Name);
            clone.Exists = true;
            world.MarkAllDurable();
        }

        private void Revert()
        {
            string volume = PickVolume();
            var targets = world.SnapshotsOf(volume).ToList();
            if (targets.Count == 0)
            {
                return;
            }
            var target = targets[rng.Next(targets.Count)];
            world.Volumes[volume].StageRevert(target.Content);
            world.Trace?.Invoke($"revert {volume} to {target.Name}");
            pool.RevertVolume(volume, target.Name);
            world.MarkAllDurable();
        }

        /// <summary>A volume that comes and goes, so its blocks are freed and reused by the others.</summary>
        private void OtherVolumeOp()
        {
            if (pool.TryGetVolume("w", out var w))
            {
                if (rng.Next(3) == 0)
                {
                    world.OtherExists = null; // unknown until DeleteVolume returns
                    pool.DeleteVolume("w");
                    world.OtherExists = false;
                    return;
                }
                var (offset, length) = RandomRange(w!.SizeBytes);
                Await(w.WriteAsync(offset, TestPools.Pattern(length, rng.Next())));
                return;
            }
            world.OtherExists = null;
            pool.CreateVolume("w", 8 * Block);
            world.OtherExists = true;
        }

        private (long Offset, int Length) RandomRange(long sizeBytes)
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
    }
}

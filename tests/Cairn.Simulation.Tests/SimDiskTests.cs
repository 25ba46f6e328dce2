using Cairn.Core;
using Cairn.Simulation.Tests.Sim;

namespace Cairn.Simulation.Tests;

/// <summary>The simulated drive's promise, which the checker relies on: FLUSH and FUA are durable, nothing else is.</summary>
public sealed class SimDiskTests
{
    private const int B = SimDisk.BlockBytes;

    [Fact]
    public void A_crash_loses_what_was_not_flushed_and_keeps_what_was()
    {
        var (sim, disk) = NewDisk();
        var device = disk.ViewFor(0);
        Run(sim, async () =>
        {
            await device.WriteAsync(0, Payload.For(0, 1));
            await device.FlushAsync();
            await device.WriteAsync(0, Payload.For(0, 2)); // cached only
            await device.WriteAsync(B, Payload.For(1, 1), WriteFlags.ForceUnitAccess);
            await device.WriteAsync(2 * B, Payload.For(2, 1)); // cached only
        });
        disk.Crash(loseWholeCache: true);
        Assert.Equal(1, Payload.VersionOf(0, disk.Peek(0)));
        Assert.Equal(1, Payload.VersionOf(1, disk.Peek(1)));
        Assert.Null(disk.Peek(2));
    }

    [Fact]
    public void A_flush_covers_writes_completed_before_it_not_those_after()
    {
        var (sim, disk) = NewDisk();
        var device = disk.ViewFor(0);
        Run(sim, async () =>
        {
            await device.WriteAsync(0, Payload.For(0, 1));
            var flush = device.FlushAsync();
            await device.WriteAsync(B, Payload.For(1, 1)); // issued after the flush started
            await flush;
        });
        disk.Crash(loseWholeCache: true);
        Assert.Equal(1, Payload.VersionOf(0, disk.Peek(0)));
        Assert.Null(disk.Peek(1));
    }

    [Fact]
    public void A_partial_crash_keeps_a_prefix_of_each_block_s_cached_writes()
    {
        var kept = new HashSet<long>();
        for (int seed = 0; seed < 20; seed++)
        {
            var (sim, disk) = NewDisk(seed);
            var device = disk.ViewFor(0);
            Run(sim, async () =>
            {
                for (int v = 1; v <= 3; v++)
                {
                    await device.WriteAsync(0, Payload.For(0, v));
                }
            });
            disk.Crash(loseWholeCache: false);
            kept.Add(disk.Peek(0) is { } data ? Payload.VersionOf(0, data) : 0);
        }
        Assert.Subset(new HashSet<long> { 0, 1, 2, 3 }, kept); // never anything but one of the writes, or nothing
        Assert.True(kept.Count > 1, "the seed should decide how much of the cache survives");
    }

    [Fact]
    public void Operations_of_a_crashed_incarnation_never_complete_nor_land()
    {
        var (sim, disk) = NewDisk();
        var device = disk.ViewFor(0);
        Task? write = null;
        Run(sim, () =>
        {
            write = device.WriteAsync(0, Payload.For(0, 1), WriteFlags.ForceUnitAccess).AsTask();
            disk.Crash(loseWholeCache: true); // before the drive's latency elapsed
            return Task.CompletedTask;
        });
        Assert.False(write!.IsCompleted);
        Assert.Null(disk.Peek(0));
    }

    private static (SimScheduler Sim, SimDisk Disk) NewDisk(int seed = 1)
    {
        var sim = new SimScheduler(seed, trace: null);
        return (sim, new SimDisk(sim, "n0", blocks: 4, latencyUsMax: 100));
    }

    private static void Run(SimScheduler sim, Func<Task> script)
    {
        Task? run = null;
        sim.At(0, () => run = script());
        sim.RunUntil(1_000_000);
        if (run!.Exception is { } failed)
        {
            throw failed.GetBaseException();
        }
    }
}

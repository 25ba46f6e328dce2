using System.Net;
using Cairn.Core;
using Cairn.Testing;
using static Cairn.Replication.Tests.TestData;

namespace Cairn.Replication.Tests;

/// <summary>
/// Rebuilding a replica while clients keep writing: the replica ends byte for byte equal to the owner, a delta
/// rebuild moves only what the replica missed, a failing rebuild target costs the rebuild and never a client's
/// write, and a stale owner is fenced when it tries to admit the replica.
/// </summary>
public sealed class RebuildTests
{
    private const long Size = 16 << 20;
    private const int Stripe = 64 << 10;
    private const int WriterCount = 4;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);

    /// <summary>Records every report at once (<see cref="Progress{T}"/> would post them to the thread pool).</summary>
    private sealed class Reports : IProgress<RebuildProgress>
    {
        public List<RebuildProgress> Seen { get; } = [];

        public void Report(RebuildProgress value)
        {
            lock (Seen)
            {
                Seen.Add(value);
            }
        }
    }

    /// <summary>
    /// Writes, trims and zeroes at random until stopped. Writer <paramref name="writer"/> owns every
    /// <see cref="WriterCount"/>-th 64 KiB stripe: on any block device the order of overlapping concurrent writes is
    /// undefined, so only one writer touches a byte and its changes are ordered.
    /// </summary>
    private static async Task<int> WriteUntilAsync(IBlockDevice volume, int writer, int seed, Func<int, bool> stop)
    {
        var random = new Random(seed);
        int count = 0;
        while (!stop(count))
        {
            long stripe = random.NextInt64(Size / Stripe / WriterCount) * WriterCount + writer;
            long offset = stripe * Stripe + random.Next(0, Stripe / 512) * 512L;
            int length = (int)Math.Min(random.Next(1, 65) * 512L, (stripe + 1) * Stripe - offset);
            switch (random.Next(10))
            {
                case 0:
                    await volume.TrimAsync(offset, length);
                    break;
                case 1:
                    await volume.WriteZeroesAsync(offset, length, random.Next(2) == 0 ? ZeroFlags.NoHole : ZeroFlags.None);
                    break;
                default:
                    await volume.WriteAsync(offset, Pattern(length, random.Next()), random.Next(8) == 0 ? WriteFlags.ForceUnitAccess : WriteFlags.None);
                    break;
            }
            count++;
        }
        return count;
    }

    private static void AssertSameBytes(RamBlockDevice expected, RamBlockDevice actual, string replica)
    {
        if (!expected.Data.SequenceEqual(actual.Data))
        {
            int at = 0;
            while (expected.Data[at] == actual.Data[at])
            {
                at++;
            }
            Assert.Fail($"replica {replica} differs from the owner from offset {at}");
        }
    }

    private static async Task<(ReplicatedVolume Volume, RamBlockDevice Local, RamBlockDevice R0, InSyncSet Set)> BuildAsync()
    {
        var local = new RamBlockDevice(Size) { Asynchronous = true };
        var r0 = new RamBlockDevice(Size) { Asynchronous = true };
        var set = new InSyncSet(1, "r0");
        var volume = new ReplicatedVolume(local, [new DirectChannel(new ReplicaTarget("r0", r0), 1)], 1, set);
        for (int i = 0; i < 64; i++) // some data to copy before anyone writes
        {
            await volume.WriteAsync(i * 3 * 65536L, Pattern(65536, 1000 + i));
        }
        return (volume, local, r0, set);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_replica_rebuilt_while_clients_write_ends_equal_to_the_owner(bool delta)
    {
        var (volume, local, r0, set) = await BuildAsync();
        using var _ = volume;
        var target = new RamBlockDevice(Size) { Asynchronous = true };
        if (delta)
        {
            // r1 was in sync, then dropped: the owner tracks what it misses from then on.
            var first = new DirectChannel(new ReplicaTarget("r1", target), 1);
            await volume.RebuildAsync(first, delta: false).WaitAsync(Deadline);
            first.Unreachable = true;
            await volume.WriteAsync(0, Pattern(4096, 1));
            Assert.NotNull(volume.DirtySince("r1"));
        }
        int written = 0;
        bool rebuilt = false;
        var writers = Enumerable.Range(0, WriterCount).Select(w => Task.Run(() => WriteUntilAsync(volume, w, 100 + w, n =>
        {
            Interlocked.Increment(ref written);
            return Volatile.Read(ref rebuilt) && n > 20;
        }))).ToArray();
        while (Volatile.Read(ref written) < 40) // clients are writing when the rebuild starts
        {
            await Task.Yield();
        }

        var reports = new Reports();
        long uncachedBefore = target.UncachedBytes;
        int before = Volatile.Read(ref written);
        var counting = new CountingChannel(new DirectChannel(new ReplicaTarget("r1", target), 1));
        var summary = await volume.RebuildAsync(counting, delta, reports).WaitAsync(Deadline);
        int during = Volatile.Read(ref written) - before;
        Volatile.Write(ref rebuilt, true);
        await Task.WhenAll(writers).WaitAsync(Deadline); // none failed, and some wrote after the admission
        await volume.FlushAsync();

        Assert.True(during > 0, "no client wrote during the rebuild");
        AssertSameBytes(local, target, "r1");
        AssertSameBytes(local, r0, "r0");
        Assert.Equal(["r0", "r1"], volume.InSyncReplicas);
        Assert.Equal(set.Epoch, volume.Epoch);
        Assert.Contains("r1", set.Replicas);
        Assert.Null(volume.DirtySince("r1"));
        var last = reports.Seen[^1];
        Assert.Equal(last.BytesTotal, last.BytesDone);
        Assert.True(reports.Seen.Zip(reports.Seen.Skip(1)).All(p => p.First.BytesDone <= p.Second.BytesDone), "progress went backwards");
        // The summary counts what the copier sent, each byte of the range once, and none of the clients' live writes.
        Assert.Equal(delta, summary.Delta);
        Assert.Equal(last.BytesTotal, summary.DataBytes + summary.ErasedBytes);
        Assert.True(counting.WrittenBytes + counting.ErasedBytes > summary.DataBytes + summary.ErasedBytes, "live changes reached the replica too");
        // The copier's large writes, and only they, ask the replica to write past its page cache; the flag reaches its device.
        Assert.InRange(counting.UncachedBytes, 1, summary.DataBytes);
        Assert.InRange(counting.SmallestUncachedWrite, ReplicatedVolume.UncachedCopyMinBytes, ReplicatedVolume.RebuildChunkBytes);
        Assert.Equal(counting.UncachedBytes, target.UncachedBytes - uncachedBefore);
        Assert.True(counting.WrittenBytes > counting.UncachedBytes, "live writes went uncached too");
        if (!delta)
        {
            Assert.Equal(Size, last.BytesTotal);
            Assert.True(reports.Seen.Count > Size / ReplicatedVolume.RebuildChunkBytes / 2, "progress is reported per chunk");
        }
    }

    /// <summary>Holds the first request of one op until released, then fails it: a request in flight across some other event.</summary>
    private sealed class HoldingChannel(IReplicaChannel inner, ReplicaOp held) : IReplicaChannel
    {
        private int _holding;

        public string Replica => inner.Replica;

        public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
            Memory<byte> readInto, CancellationToken cancellationToken = default)
        {
            if (op == held && Interlocked.Exchange(ref _holding, 1) == 0)
            {
                Reached.SetResult();
                await Release.Task;
                throw new ReplicaLinkException($"{Replica} lost while the request was in flight");
            }
            return await inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
        }
    }

    /// <summary>Completes a task on the first report: the rebuild has started and live changes reach its target.</summary>
    private sealed class Started : IProgress<RebuildProgress>
    {
        public TaskCompletionSource Reported { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Report(RebuildProgress value) => Reported.TrySetResult();
    }

    [Fact]
    public async Task A_delta_rebuild_moves_only_what_the_replica_missed()
    {
        var (volume, local, _, set) = await BuildAsync();
        using var _ = volume;
        var target = new RamBlockDevice(Size);
        var first = new DirectChannel(new ReplicaTarget("r1", target), 1);
        await volume.RebuildAsync(first, delta: false).WaitAsync(Deadline);
        await volume.FlushAsync(); // everything so far durable on r1: only what follows is missed
        first.Unreachable = true;

        var random = new Random(5);
        const int Writes = 50;
        for (int i = 0; i < Writes; i++)
        {
            await volume.WriteAsync(random.NextInt64(0, (Size - 4096) / 512) * 512, Pattern(4096, i));
        }
        await volume.TrimAsync(5 << 20, 65536);
        long dirty = volume.DirtySince("r1")!.DirtyBytes;
        var counting = new CountingChannel(new DirectChannel(new ReplicaTarget("r1", target), 1));
        var summary = await volume.RebuildAsync(counting, delta: true).WaitAsync(Deadline);

        Assert.Equal(dirty, counting.WrittenBytes + counting.ErasedBytes); // the dirty granules, and nothing else
        Assert.Equal(new RebuildSummary(Delta: true, counting.WrittenBytes, counting.ErasedBytes), summary);
        Assert.InRange(counting.WrittenBytes, 1, 2L * Writes * 4096);
        AssertSameBytes(local, target, "r1");
        Assert.Equal((4UL, 4UL), (volume.Epoch, set.Epoch)); // admitted, dropped, admitted
        Assert.Null(volume.DirtySince("r1"));
    }

    [Fact]
    public async Task A_full_rebuild_erases_stale_data_with_trims_and_zeroings_and_copies_only_allocated_data()
    {
        var local = new RamBlockDevice(Size);
        using var volume = new ReplicatedVolume(local, [], 1, new InSyncSet(1));
        await volume.WriteAsync(0, Pattern(3 << 20, 1));
        await volume.WriteZeroesAsync(1 << 20, 65536, ZeroFlags.NoHole);
        await volume.TrimAsync(2 << 20, 8192);
        await volume.WriteAsync(4 << 20, Pattern(8192, 3)); // a data extent too small to be worth writing past the cache
        var target = new RamBlockDevice(Size);
        await target.WriteAsync(0, Pattern((int)Size, 2)); // a returning replica full of stale data

        var counting = new CountingChannel(new DirectChannel(new ReplicaTarget("r1", target), 1));
        var summary = await volume.RebuildAsync(counting, delta: false).WaitAsync(Deadline);

        AssertSameBytes(local, target, "r1");
        Assert.Equal((3L << 20) - 65536 - 8192 + 8192, counting.WrittenBytes);
        Assert.Equal(counting.WrittenBytes - 8192, counting.UncachedBytes); // every piece of 64 KiB or more goes uncached
        Assert.Equal(8192, counting.LargestCachedWrite);
        Assert.Equal(counting.UncachedBytes, target.UncachedBytes);
        Assert.Equal(new RebuildSummary(Delta: false, counting.WrittenBytes, counting.ErasedBytes), summary);
        Assert.Equal(Size - counting.WrittenBytes, counting.ErasedBytes);
        Assert.Equal(AllocationState.Zero, target.PageState(1 << 20));
        Assert.Equal(AllocationState.Hole, target.PageState(2 << 20));
        Assert.Equal(AllocationState.Hole, target.PageState(Size - 4096));
        Assert.True(counting.Requests < 3 + 8 + 2, "the hole after the data is erased in one request, not one per chunk");
    }

    /// <summary>Records every request's op, offset and length, in the order the copier sent them.</summary>
    private sealed class RecordingChannel(IReplicaChannel inner) : IReplicaChannel
    {
        public List<(ReplicaOp Op, long Offset, long Length)> Sent { get; } = [];

        public string Replica => inner.Replica;

        public ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
            Memory<byte> readInto, CancellationToken cancellationToken = default)
        {
            lock (Sent)
            {
                Sent.Add((op, offset, length));
            }
            return inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
        }
    }

    [Fact]
    public async Task A_full_rebuild_erases_each_run_in_one_request_and_looks_up_allocation_in_proportion_to_the_volume()
    {
        const long mib = 1 << 20;
        const long size = 96 * mib;
        var local = new RamBlockDevice(size);
        using var volume = new ReplicatedVolume(local, [], 1, new InSyncSet(1));
        await volume.WriteAsync(0, Pattern((int)(48 * mib), 1)); // six windows of data
        await volume.WriteZeroesAsync(48 * mib, 16 * mib, ZeroFlags.NoHole); // a zero run over two windows
        await volume.WriteAsync(64 * mib, Pattern((int)mib, 2));
        await volume.WriteZeroesAsync(65 * mib, 4096, ZeroFlags.NoHole); // a zero run inside a window
        await volume.WriteAsync(65 * mib + 4096, Pattern((int)mib - 4096, 3)); // then a hole to the end, over several windows
        var target = new RamBlockDevice(size);
        await target.WriteAsync(0, Pattern((int)size, 4)); // stale data everywhere
        var recording = new RecordingChannel(new DirectChannel(new ReplicaTarget("r1", target), 1));
        long walkedBefore = local.AllocationPagesWalked;

        var summary = await volume.RebuildAsync(recording, delta: false).WaitAsync(Deadline);

        AssertSameBytes(local, target, "r1");
        var erased = recording.Sent.Where(s => s.Op is ReplicaOp.Trim or ReplicaOp.WriteZeroes).ToList();
        // A run that starts a window is erased whole; one that starts inside a window is erased up to the window's end.
        Assert.Equal([(ReplicaOp.WriteZeroes, 48 * mib, 16 * mib), (ReplicaOp.WriteZeroes, 65 * mib, 4096), (ReplicaOp.Trim, 66 * mib, 6 * mib),
            (ReplicaOp.Trim, 72 * mib, 24 * mib)], erased);
        Assert.Equal(50, recording.Sent.Count(s => s.Op == ReplicaOp.Write)); // 49 MiB in 1 MiB requests, and 1 MiB - 4 KiB
        Assert.Equal(50 * mib - 4096, summary.DataBytes);
        Assert.Equal(size - summary.DataBytes, summary.ErasedBytes);
        // Every page is looked at about twice (the window's probe, then the copy), not once per window for the rest of
        // the range as when each probe looked up to 1 GiB ahead.
        long pages = size / RamBlockDevice.PageBytes;
        Assert.InRange(local.AllocationPagesWalked - walkedBefore, pages, 2 * pages);
    }

    /// <summary>Holds every write until released, and records how many were waiting at once.</summary>
    private sealed class HeldWritesChannel(IReplicaChannel inner) : IReplicaChannel
    {
        private int _waiting;

        public string Replica => inner.Replica;

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Waiting => Volatile.Read(ref _waiting);

        public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
            Memory<byte> readInto, CancellationToken cancellationToken = default)
        {
            if (op == ReplicaOp.Write)
            {
                Interlocked.Increment(ref _waiting);
                await Release.Task;
            }
            return await inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
        }
    }

    [Fact]
    public async Task The_copier_keeps_a_window_of_requests_in_flight_and_a_live_write_to_it_waits_until_the_replica_answered_them()
    {
        var local = new RamBlockDevice(Size);
        using var volume = new ReplicatedVolume(local, [], 1, new InSyncSet(1));
        await volume.WriteAsync(0, Pattern((int)Size, 1));
        var target = new RamBlockDevice(Size);
        var held = new HeldWritesChannel(new DirectChannel(new ReplicaTarget("r1", target), 1));

        var rebuild = volume.RebuildAsync(held, delta: false);
        int window = ReplicatedVolume.RebuildWindowBytes / ReplicatedVolume.RebuildChunkBytes;
        using var deadline = new CancellationTokenSource(Deadline);
        while (held.Waiting < window) // every chunk of the first window is sent before any is answered
        {
            await Task.Delay(1, deadline.Token);
        }
        var live = volume.WriteAsync(ReplicatedVolume.RebuildWindowBytes / 2, Pattern(4096, 2)).AsTask();
        await Task.Delay(100);
        Assert.False(live.IsCompleted, "a live write entered a window whose copies were still in flight");
        Assert.Equal(window, held.Waiting); // and the copier took no further window meanwhile

        held.Release.SetResult();
        await Task.WhenAll(rebuild, live).WaitAsync(Deadline);
        AssertSameBytes(local, target, "r1");
    }

    [Fact]
    public async Task A_rebuild_target_failing_midway_aborts_the_rebuild_and_no_client_write()
    {
        var (volume, local, _, set) = await BuildAsync();
        using var _ = volume;
        var target = new RamBlockDevice(Size) { Asynchronous = true };
        bool aborted = false;
        var writers = Enumerable.Range(0, WriterCount).Select(w => Task.Run(() =>
            WriteUntilAsync(volume, w, 200 + w, n => Volatile.Read(ref aborted) && n > 20))).ToArray();

        var failure = await Assert.ThrowsAsync<ReplicaRebuildException>(() =>
            volume.RebuildAsync(new FlakyChannel(new DirectChannel(new ReplicaTarget("r1", target), 1), goodSends: 6), delta: false).WaitAsync(Deadline));
        Volatile.Write(ref aborted, true);
        await Task.WhenAll(writers).WaitAsync(Deadline); // every client write was acknowledged

        Assert.Contains("r1", failure.Message, StringComparison.Ordinal);
        Assert.Equal(["r0"], volume.InSyncReplicas);
        Assert.Equal((1UL, 1UL), (volume.Epoch, set.Epoch)); // a replica that never was in sync costs no epoch
        Assert.Equal(["r0"], set.Replicas);
        Assert.Null(volume.DirtySince("r1")); // a new replica: only a full rebuild will do

        await volume.RebuildAsync(new DirectChannel(new ReplicaTarget("r1", target), 1), delta: false).WaitAsync(Deadline); // a second attempt
        AssertSameBytes(local, target, "r1");
    }

    [Fact]
    public async Task An_owner_whose_epoch_moved_on_is_fenced_when_it_admits_the_rebuilt_replica()
    {
        var (volume, _, _, set) = await BuildAsync();
        using var _ = volume;
        set.Epoch = 9; // another owner took over in the cluster store

        var failure = await Assert.ThrowsAsync<BlockDeviceException>(() =>
            volume.RebuildAsync(new DirectChannel(new ReplicaTarget("r1", new RamBlockDevice(Size)), 1), delta: false).WaitAsync(Deadline));

        Assert.Contains("fenced", failure.Message, StringComparison.Ordinal);
        Assert.Equal(["r0"], volume.InSyncReplicas);
        var refused = await Assert.ThrowsAsync<BlockDeviceException>(async () => await volume.WriteAsync(0, Pattern(512, 1)));
        Assert.Equal(BlockError.Shutdown, refused.Error);
    }

    [Fact]
    public async Task Rebuilds_that_make_no_sense_are_refused()
    {
        var (volume, _, _, _) = await BuildAsync();
        using var _ = volume;

        var inSync = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            volume.RebuildAsync(new DirectChannel(new ReplicaTarget("r0", new RamBlockDevice(Size)), 1), delta: false));
        Assert.Contains("in sync", inSync.Message, StringComparison.Ordinal);
        var noRecord = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            volume.RebuildAsync(new DirectChannel(new ReplicaTarget("r2", new RamBlockDevice(Size)), 1), delta: true));
        Assert.Contains("rebuild it in full", noRecord.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_change_that_saw_the_replica_rebuilding_and_fails_on_it_after_admission_drops_it()
    {
        var (volume, _, _, set) = await BuildAsync();
        using var _ = volume;
        var holding = new HoldingChannel(new DirectChannel(new ReplicaTarget("r1", new RamBlockDevice(Size) { Asynchronous = true }), 1), ReplicaOp.Flush);
        var started = new Started();

        var rebuild = volume.RebuildAsync(holding, delta: false, started);
        await started.Reported.Task.WaitAsync(Deadline);
        var flush = volume.FlushAsync().AsTask(); // reaches r1 as a rebuilding replica, and is held there
        await holding.Reached.Task.WaitAsync(Deadline);
        await rebuild.WaitAsync(Deadline); // the copier's own flush passes; r1 is admitted while the change is in flight
        Assert.Equal(["r0", "r1"], volume.InSyncReplicas);

        holding.Release.SetResult();
        await flush.WaitAsync(Deadline);

        Assert.Equal(["r0"], volume.InSyncReplicas); // in sync by then: dropped with an epoch bump before the flush was acknowledged
        Assert.Equal((3UL, 3UL), (volume.Epoch, set.Epoch));
        Assert.NotNull(volume.DirtySince("r1"));
    }

    [Fact]
    public async Task Over_tcp_a_replica_rebuilt_while_clients_write_ends_equal_to_the_owner()
    {
        var log = new FrontendLog(_ => { }, _ => { }, (_, _) => { });
        var devices = new[] { new RamBlockDevice(Size), new RamBlockDevice(Size) };
        var servers = new List<ReplicaServer>();
        var links = new List<ReplicaLink>();
        try
        {
            foreach (var (device, name) in devices.Zip(new[] { "r0", "r1" }))
            {
                var catalog = new ReplicaCatalog();
                catalog.Add(new ReplicaTarget(name, device));
                var server = new ReplicaServer(catalog, log);
                server.Start(new IPEndPoint(IPAddress.Loopback, 0));
                servers.Add(server);
                links.Add(await ReplicaLink.ConnectAsync(server.LocalEndpoint, name, 1));
            }
            var local = new RamBlockDevice(Size);
            var set = new InSyncSet(1, "r0");
            using var volume = new ReplicatedVolume(local, [links[0]], 1, set);
            await volume.WriteAsync(0, Pattern(4 << 20, 1));
            bool rebuilt = false;
            var writers = Enumerable.Range(0, WriterCount).Select(w => Task.Run(() =>
                WriteUntilAsync(volume, w, 300 + w, n => Volatile.Read(ref rebuilt) && n > 20))).ToArray();

            await volume.RebuildAsync(links[1], delta: false).WaitAsync(Deadline);
            Volatile.Write(ref rebuilt, true);
            await Task.WhenAll(writers).WaitAsync(Deadline);
            await volume.FlushAsync();

            AssertSameBytes(local, devices[1], "r1");
            AssertSameBytes(local, devices[0], "r0");
            Assert.Equal(["r0", "r1"], volume.InSyncReplicas);
        }
        finally
        {
            foreach (var link in links)
            {
                await link.DisposeAsync();
            }
            foreach (var server in servers)
            {
                await server.DisposeAsync();
            }
        }
    }
}

using System.Net;
using System.Net.Sockets;
using Cairn.Core;
using Cairn.Testing;

namespace Cairn.Replication.Tests;

/// <summary>
/// The replica server's concurrency: pipelined requests execute at once and are answered as they complete, yet
/// overlapping changes keep their arrival order, a FLUSH covers every write answered before it and does not hold up
/// the writes behind it, and a malformed frame in the middle of a pipeline closes only that connection.
/// </summary>
public sealed class ReplicaConnectionTests : IAsyncLifetime
{
    private const long Size = 16 << 20;
    private readonly ReplicaCatalog _catalog = new();
    private readonly ProbeDevice _device = new(new RamBlockDevice(Size));
    private readonly List<string> _warnings = [];
    private ReplicaServer _server = null!;

    public ValueTask InitializeAsync()
    {
        _catalog.Add(new ReplicaTarget("r1", _device));
        _server = new ReplicaServer(_catalog, new FrontendLog(_ => { }, w => { lock (_warnings) { _warnings.Add(w); } }, (_, _) => { }));
        _server.Start(new IPEndPoint(IPAddress.Loopback, 0));
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private Task<ReplicaLink> ConnectAsync() => ReplicaLink.ConnectAsync(_server.LocalEndpoint, "r1", 1);

    private static ValueTask<ReplicaStatus> Write(ReplicaLink link, long offset, byte[] data, ReplicaFlags flags = ReplicaFlags.None) =>
        link.SendAsync(ReplicaOp.Write, flags, offset, (uint)data.Length, data, default);

    private static async Task<byte[]> ReadAsync(ReplicaLink link, long offset, int length)
    {
        byte[] read = new byte[length];
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Read, ReplicaFlags.None, offset, (uint)length, default, read));
        return read;
    }

    [Fact]
    public async Task A_request_waiting_on_the_device_does_not_hold_up_the_ones_behind_it()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _device.WriteGate = offset => offset == 0 ? gate.Task : null;
        await using var link = await ConnectAsync();

        var first = Write(link, 0, TestData.Pattern(4096, 1)).AsTask();
        var second = Write(link, 8192, TestData.Pattern(4096, 2)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ReplicaStatus.Ok, await second); // answered while the first still waits
        Assert.False(first.IsCompleted);

        gate.SetResult();
        Assert.Equal(ReplicaStatus.Ok, await first);
        Assert.Equal(TestData.Pattern(4096, 1), await ReadAsync(link, 0, 4096));
        Assert.Equal(TestData.Pattern(4096, 2), await ReadAsync(link, 8192, 4096));
    }

    [Fact]
    public async Task A_large_write_s_payload_is_received_into_4_KiB_aligned_memory_reused_request_after_request()
    {
        await using var link = await ConnectAsync();
        const int chunk = AlignedPayloads.BufferBytes;
        for (int round = 0; round < 3; round++)
        {
            var writes = new Task<ReplicaStatus>[4];
            for (int i = 0; i < writes.Length; i++)
            {
                writes[i] = Write(link, (long)i * chunk, TestData.Pattern(chunk, 10 * round + i), ReplicaFlags.Uncached).AsTask();
            }
            Assert.All(await Task.WhenAll(writes), status => Assert.Equal(ReplicaStatus.Ok, status));
        }

        Assert.Equal(12, _device.AlignedLargeWrites); // so the replica's O_DIRECT write needs no aligned copy of it
        Assert.InRange(AlignedPayloads.Allocated, 1, AlignedPayloads.MaxBuffers);
        Assert.Equal(TestData.Pattern(chunk, 23), await ReadAsync(link, 3L * chunk, chunk));
    }

    [Fact]
    public async Task Overlapping_writes_apply_in_arrival_order_while_the_device_completes_out_of_order()
    {
        _device.Inner.Asynchronous = true; // every operation completes after a random delay of 0-1 ms
        await using var link = await ConnectAsync();
        const int Blocks = 4;
        const int Burst = 60; // within the link's window: requests leave in the order they were sent
        for (int round = 0; round < 5; round++)
        {
            var writes = new Task<ReplicaStatus>[Burst];
            for (int i = 0; i < Burst; i++)
            {
                writes[i] = Write(link, i % Blocks * 4096L, TestData.Pattern(4096, round * Burst + i)).AsTask();
            }
            Assert.All(await Task.WhenAll(writes), status => Assert.Equal(ReplicaStatus.Ok, status));
            for (int block = 0; block < Blocks; block++)
            {
                int last = round * Burst + Burst - Blocks + block; // the last write sent to this block
                Assert.Equal(TestData.Pattern(4096, last), await ReadAsync(link, block * 4096L, 4096));
            }
        }

        // Writes to different blocks did run at once on the device.
        var spread = Enumerable.Range(0, Burst).Select(i => Write(link, (64 + i) * 4096L, TestData.Pattern(4096, i)).AsTask());
        Assert.All(await Task.WhenAll(spread), status => Assert.Equal(ReplicaStatus.Ok, status));
        Assert.True(_device.Inner.MaxConcurrentSeen > 1, $"at most {_device.Inner.MaxConcurrentSeen} device operation ran at once");
    }

    [Fact]
    public async Task Many_pipelined_writes_then_a_flush_then_reads_see_every_write()
    {
        _device.Inner.Asynchronous = true;
        await using var link = await ConnectAsync();
        const int Writes = 400;
        static byte[] Data(int i) => TestData.Pattern(i % 3 == 0 ? 12288 : 4096, i);
        var writes = Enumerable.Range(0, Writes).Select(async i => // more than the window holds: some wait for room
            Assert.Equal(ReplicaStatus.Ok, await Write(link, i * 16384L, Data(i), i % 7 == 0 ? ReplicaFlags.ForceUnitAccess : ReplicaFlags.None)));
        await Task.WhenAll(writes);

        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default));
        Assert.Equal(Writes, _device.WritesCompletedAtLastFlush); // the flush covered every write answered before it

        var reads = Enumerable.Range(0, Writes).Select(async i => Assert.Equal(Data(i), await ReadAsync(link, i * 16384L, Data(i).Length)));
        await Task.WhenAll(reads);
        Assert.Equal(Writes / 7 + 1, _device.Inner.FuaWrites);
    }

    [Fact]
    public async Task A_flush_blocked_on_the_disk_does_not_hold_up_the_writes_behind_it()
    {
        using var disk = new ManualResetEventSlim();
        _device.FlushBlocker = disk; // a synchronous flush that blocks its thread, as fdatasync does
        await using var link = await ConnectAsync();
        Assert.Equal(ReplicaStatus.Ok, await Write(link, 0, TestData.Pattern(4096, 1)));

        var flush = link.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default).AsTask();
        await _device.FlushStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ReplicaStatus.Ok, await Write(link, 4096, TestData.Pattern(4096, 2)).AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(flush.IsCompleted);

        disk.Set();
        Assert.Equal(ReplicaStatus.Ok, await flush);
        Assert.Equal(1, _device.WritesCompletedAtLastFlush);
    }

    [Fact]
    public async Task A_verify_waits_for_an_overlapping_write_but_not_for_one_elsewhere_and_sees_it_whole()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _device.WriteGate = offset => offset == 0 ? gate.Task : null;
        await using var link = await ConnectAsync();
        byte[] overlapping = new byte[ReplicaProtocol.VerifyReplyBytes];
        byte[] elsewhere = new byte[ReplicaProtocol.VerifyReplyBytes];
        overlapping.AsSpan().Fill(0xff);
        elsewhere.AsSpan().Fill(0xff);

        // Requests start in arrival order (one waiting holds up the ones behind it): the verify elsewhere goes first.
        var write = Write(link, 0, TestData.Pattern(8192, 1)).AsTask();
        var verifyElsewhere = link.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, 1 << 20, ReplicaProtocol.MaxVerifyBytes, default, elsewhere).AsTask();
        var verifyOverlapping = link.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, 4096, ReplicaProtocol.MaxVerifyBytes, default, overlapping).AsTask();
        Assert.Equal(ReplicaStatus.Ok, await verifyElsewhere.WaitAsync(TimeSpan.FromSeconds(30))); // answered while the write waits
        Assert.Equal(new byte[ReplicaProtocol.VerifyReplyBytes], elsewhere); // the bitmap came back: no bad block
        // A write to the verified range, sent after the verify, waits for it in turn (and so for the gated write).
        var writeAfter = Write(link, 8192, TestData.Pattern(4096, 2)).AsTask();
        await Task.Delay(200);
        Assert.False(verifyOverlapping.IsCompleted, "a verify overlapping an executing write ran before it finished");
        Assert.False(writeAfter.IsCompleted, "a write overlapping a waiting verify overtook it");

        gate.SetResult();
        Assert.Equal(ReplicaStatus.Ok, await write);
        Assert.Equal(ReplicaStatus.Ok, await verifyOverlapping);
        Assert.Equal(new byte[ReplicaProtocol.VerifyReplyBytes], overlapping);
        Assert.Equal(ReplicaStatus.Ok, await writeAfter);
    }

    [Theory]
    [InlineData(ReplicaOp.DeleteAllSnapshots)]
    [InlineData(ReplicaOp.RevertToSnapshot)]
    [InlineData(ReplicaOp.CreateSnapshot)]
    public async Task A_snapshot_op_waits_until_nothing_executes_and_holds_back_the_requests_after_it(ReplicaOp op)
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _device.WriteGate = offset => offset == 0 ? gate.Task : null;
        await using var link = await ConnectAsync();
        byte[] name = ReplicaRequest.CarriesName(op) ? "s1"u8.ToArray() : [];

        var write = Write(link, 0, TestData.Pattern(4096, 1)).AsTask();
        var barrier = link.SendAsync(op, ReplicaFlags.None, 0, (uint)name.Length, name, default).AsTask();
        var writeAfter = Write(link, 1 << 20, TestData.Pattern(4096, 2)).AsTask(); // elsewhere, yet behind the barrier
        await Task.Delay(200);
        Assert.False(barrier.IsCompleted, $"{op} ran while a write still executed");
        Assert.False(writeAfter.IsCompleted, $"a write overtook the {op} before it");

        gate.SetResult();
        Assert.Equal(ReplicaStatus.Ok, await write);
        Assert.Equal(ReplicaStatus.NotSupported, await barrier); // this target has no volume control: ordered all the same
        Assert.Equal(ReplicaStatus.Ok, await writeAfter);
    }

    [Fact]
    public async Task A_snapshot_block_read_is_answered_with_the_block_and_waits_only_for_a_write_overlapping_its_block()
    {
        byte[] content = TestData.Pattern(64 << 10, 5);
        var control = new RecordingControl("snap", () => content.ToArray(), []);
        control.CreateSnapshot("s1");
        _catalog.Add(new ReplicaTarget("snap", _device, control));
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _device.WriteGate = offset => offset == 6144 ? gate.Task : null;
        await using var link = await ReplicaLink.ConnectAsync(_server.LocalEndpoint, "snap", 1);
        byte[] name = "s1"u8.ToArray();
        byte[] overlapping = new byte[4096];
        byte[] elsewhere = new byte[4096];

        // The write covers [6144, 6656): inside the block at 4096, though not inside the two bytes of the request's length (the name).
        var write = Write(link, 6144, TestData.Pattern(512, 1)).AsTask();
        var readElsewhere = link.SendAsync(ReplicaOp.ReadSnapshotBlock, ReplicaFlags.None, 12288, 2, name, elsewhere).AsTask();
        var readOverlapping = link.SendAsync(ReplicaOp.ReadSnapshotBlock, ReplicaFlags.None, 4096, 2, name, overlapping).AsTask();
        try
        {
            Assert.Equal(ReplicaStatus.Ok, await readElsewhere.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(content.AsSpan(12288, 4096).ToArray(), elsewhere);
            await Task.Delay(200);
            Assert.False(readOverlapping.IsCompleted, "a snapshot block read overlapping an executing write ran before it finished");
        }
        finally
        {
            gate.TrySetResult(); // a failure must not leave the server draining a held write forever
        }
        Assert.Equal(ReplicaStatus.Ok, await write);
        Assert.Equal(ReplicaStatus.Ok, await readOverlapping);
        Assert.Equal(content.AsSpan(4096, 4096).ToArray(), overlapping);
    }

    /// <summary>Over a real connection: a snapshot verify answers the bitmap of the window's bad blocks, and a rewrite
    /// carries the name and the block and answers what became of it (the payload and the reply share one buffer).</summary>
    [Fact]
    public async Task A_snapshot_verify_reports_its_window_s_bad_blocks_and_a_rewrite_mends_one_with_the_right_data_only()
    {
        byte[] content = TestData.Pattern(300 << 10, 6); // 75 blocks: the second window ends past the snapshot's end
        var control = new RecordingControl("snap", () => content.ToArray(), []);
        control.CreateSnapshot("s1");
        control.BadSnapshotBlocks.UnionWith([("s1", 8192), ("s1", 12288), ("s1", 266240)]);
        _catalog.Add(new ReplicaTarget("snap", _device, control));
        await using var link = await ReplicaLink.ConnectAsync(_server.LocalEndpoint, "snap", 1);
        byte[] name = "s1"u8.ToArray();

        async Task<ulong> VerifyAsync(long offset)
        {
            byte[] bitmap = new byte[8];
            Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.VerifySnapshot, ReplicaFlags.None, offset, (uint)name.Length, name, bitmap));
            return BitConverter.ToUInt64(bitmap);
        }

        async Task<SnapshotRewriteOutcome> RewriteAsync(long offset, byte[] block)
        {
            byte[] payload = [.. name, .. block];
            byte[] outcome = new byte[1];
            Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.RewriteSnapshotBlock, ReplicaFlags.None, offset, (uint)payload.Length, payload, outcome));
            return (SnapshotRewriteOutcome)outcome[0];
        }

        Assert.Equal((1UL << 2) | (1UL << 3), await VerifyAsync(0));
        Assert.Equal(1UL << 1, await VerifyAsync(262144)); // blocks past the end count as good
        Assert.Equal(SnapshotRewriteOutcome.WrongData, await RewriteAsync(8192, TestData.Pattern(4096, 99)));
        Assert.Equal(SnapshotRewriteOutcome.Rewritten, await RewriteAsync(8192, content[8192..12288]));
        Assert.Equal(SnapshotRewriteOutcome.AlreadyGood, await RewriteAsync(8192, content[8192..12288]));
        Assert.Equal(1UL << 3, await VerifyAsync(0));
        byte[] nope = [.. "nope"u8, .. new byte[4096]];
        Assert.Equal(ReplicaStatus.InvalidArgument, await link.SendAsync(ReplicaOp.RewriteSnapshotBlock, ReplicaFlags.None, 0, (uint)nope.Length, nope, new byte[1]));
        Assert.Equal(ReplicaStatus.InvalidArgument, await link.SendAsync(ReplicaOp.VerifySnapshot, ReplicaFlags.None, 0, 4, "nope"u8.ToArray(), new byte[8]));
    }

    [Fact]
    public async Task A_snapshot_block_read_that_cannot_be_served_gets_a_clear_status_and_a_malformed_one_closes_only_its_connection()
    {
        var control = new RecordingControl("snap", () => new byte[64 << 10], []);
        control.CreateSnapshot("s1");
        control.BadSnapshotBlocks.Add(("s1", 8192));
        _catalog.Add(new ReplicaTarget("snap", _device, control));
        await using var link = await ReplicaLink.ConnectAsync(_server.LocalEndpoint, "snap", 1);
        await using var plain = await ConnectAsync(); // r1: a target without volume control
        byte[] block = new byte[4096];

        Task<ReplicaStatus> Read(ReplicaLink l, string snapshot, long offset)
        {
            byte[] name = System.Text.Encoding.UTF8.GetBytes(snapshot);
            return l.SendAsync(ReplicaOp.ReadSnapshotBlock, ReplicaFlags.None, offset, (uint)name.Length, name, block).AsTask();
        }

        Assert.Equal(ReplicaStatus.Io, await Read(link, "s1", 8192)); // its copy fails its checksum
        Assert.Equal(ReplicaStatus.InvalidArgument, await Read(link, "nope", 0));
        Assert.Equal(ReplicaStatus.InvalidArgument, await Read(link, "s1", 64 << 10)); // past the snapshot's end
        Assert.Equal(ReplicaStatus.NotSupported, await Read(plain, "s1", 0));
        Assert.Equal(ReplicaStatus.Ok, await Read(link, "s1", 0));

        using (var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await raw.ConnectAsync(_server.LocalEndpoint);
            await raw.SendAsync(ReplicaHello.Encode("snap", 1));
            byte[] hello = new byte[ReplicaProtocol.HelloReplySize];
            Assert.Equal(hello.Length, await raw.ReceiveAsync(hello));
            byte[] frame = new byte[ReplicaProtocol.RequestHeaderSize + 2];
            new ReplicaRequest(ReplicaOp.ReadSnapshotBlock, ReplicaFlags.None, 1, 1, 512, 2).Encode(frame);
            await raw.SendAsync(frame);
            await DrainUntilClosedAsync(raw);
        }
        lock (_warnings)
        {
            Assert.Contains(_warnings, w => w.Contains("snapshot block read at offset 512, not a multiple of 4096", StringComparison.Ordinal));
        }
        Assert.Equal(ReplicaStatus.Ok, await Read(link, "s1", 4096)); // the other connection carries on
    }

    [Fact]
    public async Task A_malformed_frame_mid_pipeline_closes_the_connection_after_the_requests_before_it()
    {
        await using var good = await ConnectAsync();
        using (var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await raw.ConnectAsync(_server.LocalEndpoint);
            await raw.SendAsync(ReplicaHello.Encode("r1", 1));
            byte[] hello = new byte[ReplicaProtocol.HelloReplySize];
            Assert.Equal(hello.Length, await raw.ReceiveAsync(hello));

            // Ten writes, a frame with a bad magic, and one more write, in one send.
            var frames = new List<byte>();
            for (int i = 0; i < 10; i++)
            {
                frames.AddRange(WriteFrame(i, i * 4096L, TestData.Pattern(4096, i)));
            }
            frames.AddRange(new byte[ReplicaProtocol.RequestHeaderSize]);
            frames.AddRange(WriteFrame(10, 100 * 4096L, TestData.Pattern(4096, 10)));
            await raw.SendAsync(frames.ToArray());

            await DrainUntilClosedAsync(raw);
        }

        lock (_warnings)
        {
            Assert.Contains(_warnings, w => w.Contains("bad request magic", StringComparison.Ordinal)); // logged before the close
        }
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal(TestData.Pattern(4096, i), await ReadAsync(good, i * 4096L, 4096)); // executed before the bad frame
        }
        Assert.Equal(new byte[4096], await ReadAsync(good, 100 * 4096L, 4096)); // never executed
    }

    private static byte[] WriteFrame(int sequence, long offset, byte[] data)
    {
        byte[] frame = new byte[ReplicaProtocol.RequestHeaderSize + data.Length];
        new ReplicaRequest(ReplicaOp.Write, ReplicaFlags.None, 1, (ulong)sequence, offset, (uint)data.Length).Encode(frame);
        data.CopyTo(frame, ReplicaProtocol.RequestHeaderSize);
        return frame;
    }

    /// <summary>Reads until the server closes (a reset counts: unread bytes on the server side turn the close into one).</summary>
    private static async Task DrainUntilClosedAsync(Socket socket)
    {
        byte[] buffer = new byte[64 * 1024];
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, deadline.Token) > 0)
            {
            }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
        }
    }

    /// <summary>
    /// A RAM device that counts completed writes, remembers how many had completed when the last flush started, and can
    /// hold writes (asynchronously) or flushes (blocking the calling thread, like fdatasync) until released.
    /// </summary>
    private sealed class ProbeDevice(RamBlockDevice inner) : IBlockDevice
    {
        private int _writesCompleted;

        public RamBlockDevice Inner => inner;

        public Func<long, Task?>? WriteGate { get; set; }

        public ManualResetEventSlim? FlushBlocker { get; set; }

        public TaskCompletionSource FlushStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int WritesCompletedAtLastFlush { get; private set; } = -1;

        private int _alignedLargeWrites;

        /// <summary>Writes of more than 128 KiB whose payload sat 4 KiB-aligned in memory (as O_DIRECT wants it).</summary>
        public int AlignedLargeWrites => Volatile.Read(ref _alignedLargeWrites);

        public long SizeBytes => inner.SizeBytes;

        public int PreferredBlockSizeBytes => inner.PreferredBlockSizeBytes;

        public bool IsReadOnly => inner.IsReadOnly;

        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
            inner.ReadAsync(offset, destination, cancellationToken);

        public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            if (source.Length > 128 << 10 && System.Runtime.InteropServices.MemoryMarshal.TryGetArray(source, out var segment)
                && (System.Runtime.InteropServices.Marshal.UnsafeAddrOfPinnedArrayElement(segment.Array!, segment.Offset) & (AlignedPayloads.Alignment - 1)) == 0)
            {
                Interlocked.Increment(ref _alignedLargeWrites);
            }
            if (WriteGate?.Invoke(offset) is { } gate)
            {
                await gate;
            }
            await inner.WriteAsync(offset, source, flags, cancellationToken);
            Interlocked.Increment(ref _writesCompleted);
        }

        public ValueTask FlushAsync(CancellationToken cancellationToken = default)
        {
            WritesCompletedAtLastFlush = Volatile.Read(ref _writesCompleted);
            FlushStarted.TrySetResult();
            FlushBlocker?.Wait(TimeSpan.FromSeconds(30), CancellationToken.None);
            return inner.FlushAsync(cancellationToken);
        }

        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            inner.TrimAsync(offset, length, flags, cancellationToken);

        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            inner.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken);

        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) =>
            inner.GetAllocationAsync(offset, length, extents, cancellationToken);
    }
}

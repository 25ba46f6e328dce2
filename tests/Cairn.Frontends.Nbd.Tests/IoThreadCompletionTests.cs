using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Cairn.Core;
using Cairn.Core.Transport;
using static Cairn.Frontends.Nbd.Tests.NbdTestClient;

namespace Cairn.Frontends.Nbd.Tests;

/// <summary>
/// Requests that complete on an epoll IO thread, as a replicated volume's writes do (where the last replica's answer
/// was read): their replies are deferred to the end of that thread's batch of events and gathered into one send.
/// None may be lost, answered twice or torn, whatever mix of small and large replies shares a batch.
/// </summary>
public sealed class IoThreadCompletionTests
{
    [Fact]
    public Task Writes_completing_in_bursts_on_an_io_thread_each_get_one_reply() =>
        WithinDeadlineAsync(WritesCompletingInBurstsAsync(inEndOfBatchWork: false));

    /// <summary>
    /// Requests that finish in work the IO thread runs at the end of its batch (as a replica's deferred frame flush
    /// can finish them): their connection defers its flush while that thread is already draining its deferred work.
    /// The flush must still run then; left for the next batch, it would wait for an event the waiting client never causes.
    /// </summary>
    [Fact]
    public Task Writes_completing_in_end_of_batch_work_each_get_one_reply() =>
        WithinDeadlineAsync(WritesCompletingInBurstsAsync(inEndOfBatchWork: true));

    private static async Task WritesCompletingInBurstsAsync(bool inEndOfBatchWork)
    {
        if (!EpollLoop.IsSupported)
        {
            return;
        }
        await using var device = await IoThreadCompletingDevice.StartAsync(new RamBlockDevice(64L << 20), inEndOfBatchWork);
        await using var server = await StartAsync(device);
        var (c, _, _) = await OpenAsync(server.LocalEndpoint.Port, "disk");
        await using var _c = c;
        const int count = 300;
        var blocks = Enumerable.Range(0, count).Select(i => Pattern(4096, i)).ToArray();
        var batch = new MemoryStream();
        for (int i = 0; i < count; i++)
        {
            batch.Write(Request(0, CmdWrite, (ulong)i, (ulong)i * 4096, 4096, blocks[i]));
        }
        await c.SendAsync(batch.ToArray());
        var seen = new HashSet<ulong>();
        for (int i = 0; i < count; i++)
        {
            var reply = await c.ReadReplyAsync();
            Assert.Equal(0u, reply.Error);
            Assert.True(seen.Add(reply.Cookie), $"cookie {reply.Cookie} answered twice");
        }
        Assert.True(device.CompletedOnIoThread > 0);
        Assert.Equal(inEndOfBatchWork, device.CompletedInEndOfBatchWork > 0);
        for (int i = 0; i < count; i += 37)
        {
            Assert.Equal(blocks[i], await c.ReadAsync((ulong)i * 4096, 4096, cookie: 100_000 + (ulong)i));
        }
    }

    [Fact]
    public Task Small_and_large_read_replies_finishing_in_one_batch_stay_whole_and_in_their_own_frames() =>
        WithinDeadlineAsync(MixedReadRepliesAsync(inEndOfBatchWork: false));

    /// <summary>The same with the reads finishing in end-of-batch work: the large replies' sends park while the IO thread drains.</summary>
    [Fact]
    public Task Small_and_large_read_replies_finishing_in_end_of_batch_work_stay_whole_and_in_their_own_frames() =>
        WithinDeadlineAsync(MixedReadRepliesAsync(inEndOfBatchWork: true));

    private static async Task MixedReadRepliesAsync(bool inEndOfBatchWork)
    {
        if (!EpollLoop.IsSupported)
        {
            return;
        }
        var ram = new RamBlockDevice(64L << 20);
        await using var device = await IoThreadCompletingDevice.StartAsync(ram, inEndOfBatchWork);
        await using var server = await StartAsync(device);
        var (c, _, _) = await OpenAsync(server.LocalEndpoint.Port, "disk");
        await using var _c = c;
        // Lengths around the gathering limit (16 KiB) and the gather buffer (64 KiB), so batches mix both paths.
        int[] lengths = [512, 4096, 16 * 1024, 16 * 1024 + 512, 60 * 1024, 64 * 1024, 200 * 1024];
        const int count = 120;
        var blocks = Enumerable.Range(0, count).Select(i => Pattern(lengths[i % lengths.Length], i)).ToArray();
        const long stride = 256 * 1024;
        for (int i = 0; i < count; i++)
        {
            blocks[i].CopyTo(ram.Data[(int)(i * stride)..]);
        }
        var batch = new MemoryStream();
        for (int i = 0; i < count; i++)
        {
            batch.Write(Request(0, CmdRead, 1000 + (ulong)i, (ulong)(i * stride), (uint)blocks[i].Length));
        }
        await c.SendAsync(batch.ToArray());
        var seen = new HashSet<int>();
        for (int i = 0; i < count; i++)
        {
            var head = await c.ReadExactAsync(16); // magic, error, cookie
            Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(4)));
            int index = (int)(BinaryPrimitives.ReadUInt64BigEndian(head.AsSpan(8)) - 1000);
            Assert.True(seen.Add(index), $"read {index} answered twice");
            Assert.Equal(blocks[index], await c.ReadExactAsync(blocks[index].Length));
        }
        Assert.True(device.CompletedOnIoThread > 0);
        Assert.Equal(inEndOfBatchWork, device.CompletedInEndOfBatchWork > 0);
    }

    /// <summary>
    /// The client's reads time out, but a reply stuck in the server also holds its request's slot, and disposing the
    /// server waits for every slot: the whole test, cleanup included, gets a deadline so a stuck reply fails it.
    /// </summary>
    private static async Task WithinDeadlineAsync(Task test)
    {
        var deadline = TimeSpan.FromSeconds(90);
        try
        {
            await test.WaitAsync(deadline);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"not finished within {deadline.TotalSeconds} s, cleanup included: a reply (and its slot) is stuck in the server");
        }
    }

    private static async Task<NbdServer> StartAsync(IBlockDevice device)
    {
        var catalog = new TestCatalog { DefaultExportName = "disk" }.Add("disk", device, "completes on an IO thread");
        var server = new NbdServer(catalog, new NbdServerOptions
        {
            Endpoint = new IPEndPoint(IPAddress.Loopback, 0),
            MaxInFlightPerConnection = 32,
            Transport = NbdTransportKind.Epoll,
        });
        await server.StartAsync();
        return server;
    }

    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>
    /// Does the work at once but completes it later, in bursts, from the receive loop of a loopback connection served
    /// by an epoll IO thread: each operation queues its completion and pokes the connection; whatever is queued when the
    /// IO thread reads the pokes completes there, inline (or, with <c>inEndOfBatchWork</c>, in work that reading
    /// defers to the end of the IO thread's batch).
    /// </summary>
    private sealed class IoThreadCompletingDevice(RamBlockDevice inner, EpollLoopGroup loops, Socket poker, ISocketTransport completer, bool inEndOfBatchWork)
        : IBlockDevice, IAsyncDisposable, IThreadPoolWorkItem
    {
        private readonly ConcurrentQueue<TaskCompletionSource> _pending = new();
        private Task _completing = Task.CompletedTask;
        private int _completedOnIoThread;
        private int _completedInEndOfBatchWork;

        public int CompletedOnIoThread => Volatile.Read(ref _completedOnIoThread);
        public int CompletedInEndOfBatchWork => Volatile.Read(ref _completedInEndOfBatchWork);

        public static async Task<IoThreadCompletingDevice> StartAsync(RamBlockDevice inner, bool inEndOfBatchWork = false)
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen(1);
            var poker = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            poker.Connect(listener.LocalEndPoint!);
            var accepted = listener.Accept();
            var loops = new EpollLoopGroup("test-completer", _ => { }, count: 1);
            var device = new IoThreadCompletingDevice(inner, loops, poker, loops.Open(accepted), inEndOfBatchWork);
            device._completing = device.CompleteLoopAsync();
            await Task.Yield();
            return device;
        }

        public long SizeBytes => inner.SizeBytes;
        public int PreferredBlockSizeBytes => inner.PreferredBlockSizeBytes;
        public bool IsReadOnly => false;

        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
            Later(inner.ReadAsync(offset, destination, cancellationToken));

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            Later(inner.WriteAsync(offset, source, flags, cancellationToken));

        public ValueTask FlushAsync(CancellationToken cancellationToken = default) => Later(inner.FlushAsync(cancellationToken));

        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            Later(inner.TrimAsync(offset, length, flags, cancellationToken));

        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            Later(inner.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken));

        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default) =>
            inner.GetAllocationAsync(offset, length, extents, cancellationToken);

        private ValueTask Later(ValueTask done)
        {
            done.GetAwaiter().GetResult(); // the RAM device is synchronous
            var completion = new TaskCompletionSource(); // continuations run inline, on the IO thread that completes it
            _pending.Enqueue(completion);
            poker.Send([1]);
            return new ValueTask(completion.Task);
        }

        private async Task CompleteLoopAsync()
        {
            byte[] pokes = new byte[256];
            while (await completer.ReceiveAsync(pokes) > 0)
            {
                if (!inEndOfBatchWork || !EpollLoop.TryDeferToEndOfBatch(this))
                {
                    CompletePending(inEndOfBatchWork: false);
                }
            }
        }

        void IThreadPoolWorkItem.Execute() => CompletePending(inEndOfBatchWork: true);

        private void CompletePending(bool inEndOfBatchWork)
        {
            bool onIoThread = Thread.CurrentThread.Name?.StartsWith("test-completer-io", StringComparison.Ordinal) == true;
            while (_pending.TryDequeue(out var completion))
            {
                if (onIoThread)
                {
                    Interlocked.Increment(ref _completedOnIoThread);
                    if (inEndOfBatchWork)
                    {
                        Interlocked.Increment(ref _completedInEndOfBatchWork);
                    }
                }
                completion.SetResult();
            }
        }

        public async ValueTask DisposeAsync()
        {
            poker.Dispose();
            await _completing;
            completer.Close();
            loops.Dispose();
        }
    }
}

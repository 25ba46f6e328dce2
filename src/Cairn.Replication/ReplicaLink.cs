using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace Cairn.Replication;

/// <summary>A replica connection failed: the link is dead and every request on it failed with this.</summary>
public sealed class ReplicaLinkException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// An owner's connection to one replica: requests are pipelined (up to <see cref="MaxInFlight"/> at once) and matched to
/// replies by sequence number. Each in-flight request occupies a reusable slot that is its own awaitable, so a request
/// allocates nothing. When the connection breaks, every waiting request fails with <see cref="ReplicaLinkException"/>
/// and so does every later one: the owner then drops the replica (bumping the epoch) or reconnects.
/// </summary>
public sealed class ReplicaLink : IReplicaChannel, IAsyncDisposable
{
    public const int MaxInFlight = 64;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly Slot[] _slots = new Slot[MaxInFlight];
    private readonly SemaphoreSlim _window = new(MaxInFlight, MaxInFlight);
    private readonly Stack<int> _free = new(Enumerable.Range(0, MaxInFlight).Reverse());
    private readonly SemaphoreSlim _sending = new(1, 1);
    private readonly byte[] _sendHeader = new byte[ReplicaProtocol.RequestHeaderSize];
    private readonly CancellationTokenSource _closed = new();
    private readonly Task _receiving;
    private long _sequence;
    private volatile Exception? _failure;

    private ReplicaLink(Socket socket, string replica, ulong epoch, long sizeBytes)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        Replica = replica;
        Epoch = epoch;
        SizeBytes = sizeBytes;
        for (int i = 0; i < _slots.Length; i++)
        {
            _slots[i] = new Slot(this, i);
        }
        _receiving = Task.Run(ReceiveLoopAsync);
    }

    public string Replica { get; }

    /// <summary>The epoch this link sends with every request.</summary>
    public ulong Epoch { get; }

    public long SizeBytes { get; }

    public bool IsBroken => _failure is not null;

    /// <summary>Connects and says hello; throws <see cref="ReplicaLinkException"/> naming why the replica refused (stale epoch, unknown replica).</summary>
    public static async Task<ReplicaLink> ConnectAsync(EndPoint endpoint, string replica, ulong epoch, CancellationToken cancellationToken = default)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endpoint, cancellationToken);
            await socket.SendAsync(ReplicaHello.Encode(replica, epoch), cancellationToken);
            byte[] reply = new byte[ReplicaProtocol.HelloReplySize];
            int read = 0;
            while (read < reply.Length)
            {
                int n = await socket.ReceiveAsync(reply.AsMemory(read), cancellationToken);
                if (n == 0)
                {
                    throw new ReplicaLinkException($"replica {replica} at {endpoint} closed the connection during hello");
                }
                read += n;
            }
            if (!ReplicaHello.TryDecodeReply(reply, out var status, out ulong replicaEpoch, out long size))
            {
                throw new ReplicaLinkException($"replica {replica} at {endpoint} answered hello with a bad frame");
            }
            if (status != ReplicaStatus.Ok)
            {
                throw new ReplicaLinkException(status == ReplicaStatus.StaleEpoch
                    ? $"replica {replica} at {endpoint} has seen epoch {replicaEpoch}, newer than ours ({epoch}): another owner took over"
                    : $"replica {replica} at {endpoint} refused the connection: {status}");
            }
            return new ReplicaLink(socket, replica, epoch, size);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends one request and waits for its reply. A read's data lands in <paramref name="readInto"/> (its length is the
    /// request's), a verify's bitmap in its first <see cref="ReplicaProtocol.VerifyReplyBytes"/> bytes.</summary>
    public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        ThrowIfBroken();
        await _window.WaitAsync(cancellationToken);
        Slot slot;
        lock (_free)
        {
            slot = _slots[_free.Pop()]; // the window guarantees one is free
        }
        // The low bits of the sequence name the slot, so a reply finds its request without a lookup table.
        long sequence = Interlocked.Increment(ref _sequence) * MaxInFlight + slot.Index;
        int replyPayload = ReplicaProtocol.ReplyPayloadBytes(op, length);
        slot.Arm(sequence, replyPayload > 0 ? readInto[..replyPayload] : default);
        try
        {
            await _sending.WaitAsync(cancellationToken);
            try
            {
                ThrowIfBroken();
                new ReplicaRequest(op, flags, Epoch, (ulong)sequence, offset, length).Encode(_sendHeader);
                await _stream.WriteAsync(_sendHeader, _closed.Token);
                if (ReplicaRequest.OpCarriesPayload(op))
                {
                    await _stream.WriteAsync(payload, _closed.Token);
                }
            }
            finally
            {
                _sending.Release();
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException || (e is OperationCanceledException && _closed.IsCancellationRequested))
        {
            Fail(new ReplicaLinkException($"replica {Replica}: sending failed: {e.Message}", e));
        }
        catch (OperationCanceledException)
        {
            // Cancelled before anything was written: the request never left; its slot throws the cancellation and is freed.
            slot.Complete(default, new OperationCanceledException(cancellationToken));
        }
        return await new ValueTask<ReplicaStatus>(slot, slot.Version);
    }

    private async Task ReceiveLoopAsync()
    {
        byte[] header = new byte[ReplicaProtocol.ReplyHeaderSize];
        try
        {
            while (true)
            {
                await _stream.ReadExactlyAsync(header, _closed.Token);
                if (!ReplicaReply.TryDecode(header, out var reply))
                {
                    throw new ReplicaLinkException($"replica {Replica} sent a bad reply frame");
                }
                var slot = _slots[(long)(reply.Sequence % MaxInFlight)];
                if (!slot.Matches((long)reply.Sequence))
                {
                    throw new ReplicaLinkException($"replica {Replica} answered request {reply.Sequence}, which is not in flight");
                }
                if (reply.Status == ReplicaStatus.Ok && slot.ReadInto.Length > 0)
                {
                    await _stream.ReadExactlyAsync(slot.ReadInto, _closed.Token);
                }
                slot.Complete(reply.Status, null);
            }
        }
        catch (Exception e)
        {
            Fail(e as ReplicaLinkException ?? new ReplicaLinkException($"replica {Replica}: connection lost: {e.Message}", e));
        }
    }

    private void Fail(ReplicaLinkException failure)
    {
        if (Interlocked.CompareExchange(ref _failure, failure, null) is not null)
        {
            return;
        }
        _closed.Cancel();
        _socket.Dispose();
        foreach (var slot in _slots)
        {
            slot.FailIfArmed(failure);
        }
    }

    private void ThrowIfBroken()
    {
        if (_failure is { } failure)
        {
            throw new ReplicaLinkException(failure.Message, failure);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new ReplicaLinkException($"replica {Replica}: link closed"));
        await _receiving;
        await _stream.DisposeAsync();
        _window.Dispose();
        _sending.Dispose();
        _closed.Dispose();
    }

    /// <summary>One in-flight request: armed when sent, completed by its reply, reset when its sender reads the result.</summary>
    private sealed class Slot(ReplicaLink link, int index) : IValueTaskSource<ReplicaStatus>
    {
        public int Index { get; } = index;

        private readonly Lock _lock = new();
        private ManualResetValueTaskSourceCore<ReplicaStatus> _core = new() { RunContinuationsAsynchronously = true };
        private long _sequence;
        private bool _armed;

        public Memory<byte> ReadInto { get; private set; }

        public short Version => _core.Version;

        public void Arm(long sequence, Memory<byte> readInto)
        {
            lock (_lock)
            {
                _sequence = sequence;
                ReadInto = readInto;
                _armed = true;
            }
        }

        public bool Matches(long sequence)
        {
            lock (_lock)
            {
                return _armed && _sequence == sequence;
            }
        }

        public void Complete(ReplicaStatus status, Exception? error)
        {
            lock (_lock)
            {
                if (!_armed)
                {
                    return;
                }
                _armed = false;
                ReadInto = default;
            }
            if (error is null)
            {
                _core.SetResult(status);
            }
            else
            {
                _core.SetException(error);
            }
        }

        public void FailIfArmed(Exception error) => Complete(default, error);

        public ReplicaStatus GetResult(short token)
        {
            try
            {
                return _core.GetResult(token);
            }
            finally
            {
                _core.Reset();
                lock (link._free)
                {
                    link._free.Push(Index);
                }
                link._window.Release();
            }
        }

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}

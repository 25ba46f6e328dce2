using System.Net;
using System.Runtime.CompilerServices;
using Cairn.Core.Transport;

namespace Cairn.Replication;

/// <summary>A replica connection failed: the link is dead and every request on it failed with this.</summary>
public sealed class ReplicaLinkException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// An owner's connection to one replica: requests are pipelined (up to <see cref="MaxInFlight"/> at once) and matched to
/// replies by sequence number. Each in-flight request occupies a reusable slot that is its own awaitable and its own
/// outgoing frame, so a request allocates nothing. Requests queued while a send is under way leave together in one
/// write (<see cref="FrameSender"/>), and the receive loop reads as many replies per syscall as have arrived.
/// When the connection breaks, every waiting request fails with <see cref="ReplicaLinkException"/> and so does every
/// later one: the owner then drops the replica (bumping the epoch) or reconnects.
/// </summary>
public sealed partial class ReplicaLink : IReplicaChannel, IAsyncDisposable
{
    public const int MaxInFlight = 64;

    private const int ReceiveBufferBytes = 64 * 1024;
    private const int SendBufferBytes = 64 * 1024;

    private readonly ISocketTransport _transport;
    private readonly Slot[] _slots = new Slot[MaxInFlight];
    private readonly SemaphoreSlim _window = new(MaxInFlight, MaxInFlight);
    private readonly Stack<int> _free = new(Enumerable.Range(0, MaxInFlight).Reverse());
    private readonly FrameSender _sender;
    private readonly Task _receiving;
    private long _sequence;
    private int _inFlight;
    private volatile ReplicaLinkException? _failure;

    private ReplicaLink(ISocketTransport transport, string replica, ulong epoch, long sizeBytes)
    {
        _transport = transport;
        Replica = replica;
        Epoch = epoch;
        SizeBytes = sizeBytes;
        for (int i = 0; i < _slots.Length; i++)
        {
            _slots[i] = new Slot(this, i);
        }
        _sender = new FrameSender(_transport, MaxInFlight, SendBufferBytes,
            e => Fail(new ReplicaLinkException($"replica {Replica}: sending failed: {e.Message}", e)));
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
        var transport = ReplicaTransport.Open(await ReplicaTransport.ConnectAsync(endpoint, cancellationToken));
        try
        {
            using var cancelled = cancellationToken.Register(transport.Close);
            await transport.SendAllAsync(ReplicaHello.Encode(replica, epoch));
            byte[] reply = new byte[ReplicaProtocol.HelloReplySize];
            if (!await transport.ReceiveExactlyAsync(reply))
            {
                throw new ReplicaLinkException($"replica {replica} at {endpoint} closed the connection during hello");
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
            return new ReplicaLink(transport, replica, epoch, size);
        }
        catch (Exception e)
        {
            transport.Close();
            if (e is ObjectDisposedException or IOException && cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException($"connecting to replica {replica} at {endpoint} was cancelled", e, cancellationToken);
            }
            throw;
        }
    }

    /// <summary>
    /// Sends one request and waits for its reply. A read's data lands in <paramref name="readInto"/> (its length is the
    /// request's), a verify's bitmap in its first <see cref="ReplicaProtocol.VerifyReplyBytes"/> bytes; a write's <paramref name="payload"/> must stay unchanged until the reply. Cancellation is honoured
    /// while the request waits for room in the window; once queued, it goes out and its reply is awaited.
    /// </summary>
    public ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        if (_failure is { } failure)
        {
            return ValueTask.FromException<ReplicaStatus>(new ReplicaLinkException(failure.Message, failure));
        }
        var request = new ReplicaRequest(op, flags, Epoch, 0, offset, length);
        return _window.Wait(0, CancellationToken.None) ? Send(request, payload, readInto) : SendWhenWindowOpensAsync(request, payload, readInto, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<ReplicaStatus> SendWhenWindowOpensAsync(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto,
        CancellationToken cancellationToken)
    {
        await _window.WaitAsync(cancellationToken);
        return await Send(request, payload, readInto);
    }

    /// <summary>Arms a slot (the window is already taken for it) and queues its frame. Requests queued while others are in
    /// flight are written by a thread-pool thread, so that a burst of them leaves in one write.</summary>
    private ValueTask<ReplicaStatus> Send(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto)
    {
        Slot slot;
        lock (_free)
        {
            slot = _slots[_free.Pop()]; // the window guarantees one is free
        }
        // The low bits of the sequence name the slot, so a reply finds its request without a lookup table.
        long sequence = Interlocked.Increment(ref _sequence) * MaxInFlight + slot.Index;
        int replyPayload = ReplicaProtocol.ReplyPayloadBytes(request.Op, request.Length);
        slot.Arm(request with { Sequence = (ulong)sequence },
            ReplicaRequest.OpCarriesPayload(request.Op) ? payload : default,
            replyPayload > 0 ? readInto[..replyPayload] : default);
        bool othersInFlight = Interlocked.Increment(ref _inFlight) > 1;
        if (_failure is { } failure)
        {
            slot.Complete(default, new ReplicaLinkException(failure.Message, failure)); // Fail may have passed this slot by already
        }
        else
        {
            _sender.Enqueue(slot, deferFlush: othersInFlight);
        }
        return new ValueTask<ReplicaStatus>(slot, slot.Version);
    }

    private async Task ReceiveLoopAsync()
    {
        byte[] buffer = new byte[ReceiveBufferBytes];
        int start = 0;
        int end = 0;
        try
        {
            while (true)
            {
                while (end - start >= ReplicaProtocol.ReplyHeaderSize)
                {
                    var slot = Match(buffer.AsSpan(start, ReplicaProtocol.ReplyHeaderSize), out var status);
                    start += ReplicaProtocol.ReplyHeaderSize;
                    var into = status == ReplicaStatus.Ok ? slot.ReadInto : default;
                    int buffered = Math.Min(into.Length, end - start);
                    buffer.AsSpan(start, buffered).CopyTo(into.Span);
                    start += buffered;
                    if (buffered < into.Length)
                    {
                        if (!await _transport.ReceiveExactlyAsync(into[buffered..])) // the buffer is empty now
                        {
                            throw new ReplicaLinkException($"replica {Replica}: the replica closed the connection in the middle of a read reply");
                        }
                    }
                    slot.Complete(status, null);
                }
                if (start == end)
                {
                    start = end = 0;
                }
                else if (start > 0)
                {
                    buffer.AsSpan(start, end - start).CopyTo(buffer); // less than one header
                    end -= start;
                    start = 0;
                }
                int read = await _transport.ReceiveAsync(buffer.AsMemory(end));
                if (read == 0)
                {
                    throw new ReplicaLinkException($"replica {Replica}: the replica closed the connection");
                }
                end += read;
            }
        }
        catch (Exception e)
        {
            Fail(e as ReplicaLinkException ?? new ReplicaLinkException($"replica {Replica}: connection lost: {e.Message}", e));
        }
    }

    private Slot Match(ReadOnlySpan<byte> header, out ReplicaStatus status)
    {
        if (!ReplicaReply.TryDecode(header, out var reply))
        {
            throw new ReplicaLinkException($"replica {Replica} sent a bad reply frame");
        }
        var slot = _slots[(long)(reply.Sequence % MaxInFlight)];
        if (!slot.Matches((long)reply.Sequence))
        {
            throw new ReplicaLinkException($"replica {Replica} answered request {reply.Sequence}, which is not in flight");
        }
        status = reply.Status;
        return slot;
    }

    private void Fail(ReplicaLinkException failure)
    {
        if (Interlocked.CompareExchange(ref _failure, failure, null) is not null)
        {
            return;
        }
        _transport.Close(); // before any slot fails: no frame of a reused slot can reach the wire after this
        foreach (var slot in _slots)
        {
            slot.FailIfArmed(failure);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new ReplicaLinkException($"replica {Replica}: link closed"));
        await _receiving;
        _window.Dispose();
    }

    /// <summary>A slot's request finished and its caller has the result: the slot and its window place are free again.</summary>
    private void Release(int index)
    {
        Interlocked.Decrement(ref _inFlight);
        lock (_free)
        {
            _free.Push(index);
        }
        _window.Release();
    }
}

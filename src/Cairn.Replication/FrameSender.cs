using Cairn.Core.Transport;

namespace Cairn.Replication;

/// <summary>A frame waiting for a <see cref="FrameSender"/>: a small fixed-size head, then an optional body.</summary>
internal interface IOutgoingFrame
{
    /// <summary>Encodes the head into <paramref name="destination"/> (at least <see cref="FrameSender.MaxHeadBytes"/> long) and returns its length.</summary>
    int WriteHead(Span<byte> destination);

    /// <summary>Bytes that follow the head on the wire; they must stay valid until <see cref="Sent"/>.</summary>
    ReadOnlyMemory<byte> Body { get; }

    /// <summary>The sender is done with the frame: it is on the wire, or the connection failed. Called exactly once per enqueue.</summary>
    void Sent();
}

/// <summary>
/// One connection's send path: frames are queued in order, and whoever finds no send running becomes the flusher and
/// writes every queued frame, small bodies gathered with their heads into one buffer, so that many frames queued
/// while a write is under way leave in one syscall. The queue is a ring of <c>capacity</c> entries: callers bound how
/// many frames can wait (one per in-flight request), so it never grows and never allocates.
/// While corked (the connection's receive loop is still parsing a batch of requests), nothing is written; uncorking
/// sends what queued up meanwhile.
/// </summary>
internal sealed class FrameSender : IThreadPoolWorkItem
{
    public const int MaxHeadBytes = ReplicaProtocol.RequestHeaderSize;

    /// <summary>Bodies up to this size are copied next to their head; larger ones are written straight from their memory.</summary>
    private const int GatherBodyMaxBytes = 16 * 1024;

    private readonly ISocketTransport _transport;
    private readonly Action<Exception> _failed;
    private readonly IOutgoingFrame?[] _ring;
    private readonly IOutgoingFrame?[] _taken;
    private readonly byte[] _buffer;
    private readonly Lock _lock = new();
    private int _head;
    private int _count;
    private bool _flushing;
    private bool _corked;
    private bool _broken;

    /// <param name="failed">Told once, about the first write that failed; every frame queued later is dropped (its <see cref="IOutgoingFrame.Sent"/> still runs).</param>
    public FrameSender(ISocketTransport transport, int capacity, int bufferBytes, Action<Exception> failed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferBytes, MaxHeadBytes + GatherBodyMaxBytes);
        _transport = transport;
        _failed = failed;
        _ring = new IOutgoingFrame?[capacity];
        _taken = new IOutgoingFrame?[capacity];
        _buffer = new byte[bufferBytes];
    }

    /// <summary>
    /// Queues a frame. With no flush under way (and not corked) the caller flushes: right here, or with
    /// <paramref name="deferFlush"/> later, so that frames queued by the caller's next steps join the same write: at the
    /// end of the IO thread's batch of events when called on an IO thread (a burst of requests parsed from one receive),
    /// otherwise on a thread-pool thread.
    /// </summary>
    public void Enqueue(IOutgoingFrame frame, bool deferFlush = false)
    {
        lock (_lock)
        {
            if (_broken)
            {
                frame.Sent(); // nothing will be written any more; the connection's failure answers for the frame
                return;
            }
            if (_count == _ring.Length)
            {
                throw new InvalidOperationException($"more than {_ring.Length} frames queued: the caller's in-flight bound was broken");
            }
            _ring[(_head + _count) % _ring.Length] = frame;
            _count++;
            if (_flushing || _corked)
            {
                return;
            }
            _flushing = true;
        }
        if (!deferFlush)
        {
            _ = FlushAsync();
        }
        else if (!EpollLoop.TryDeferToEndOfBatch(this))
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
    }

    /// <summary>Holds queued frames back until <see cref="Uncork"/>: a receive loop's replies to one batch of requests leave together.</summary>
    public void Cork()
    {
        lock (_lock)
        {
            _corked = true;
        }
    }

    /// <summary>Sends what queued up while corked, on the caller's thread unless a flush is already under way.</summary>
    public void Uncork()
    {
        lock (_lock)
        {
            _corked = false;
            if (_flushing || _count == 0 || _broken)
            {
                return;
            }
            _flushing = true;
        }
        _ = FlushAsync();
    }

    void IThreadPoolWorkItem.Execute() => _ = FlushAsync();

    /// <summary>Writes batches until the queue is empty. Synchronous (and allocation-free) while the socket takes the bytes at once.</summary>
    private async Task FlushAsync()
    {
        while (true)
        {
            int taken = Take();
            if (taken == 0)
            {
                return;
            }
            try
            {
                int used = 0;
                for (int i = 0; i < taken; i++)
                {
                    var frame = _taken[i]!;
                    used += frame.WriteHead(_buffer.AsSpan(used));
                    var body = frame.Body;
                    if (body.Length <= GatherBodyMaxBytes)
                    {
                        body.Span.CopyTo(_buffer.AsSpan(used));
                        used += body.Length;
                        continue;
                    }
                    await _transport.SendAllAsync(_buffer.AsMemory(0, used));
                    await _transport.SendAllAsync(body);
                    used = 0;
                }
                if (used > 0)
                {
                    await _transport.SendAllAsync(_buffer.AsMemory(0, used));
                }
            }
            catch (Exception e)
            {
                Break(e);
            }
            finally
            {
                for (int i = 0; i < taken; i++)
                {
                    _taken[i]!.Sent();
                    _taken[i] = null;
                }
            }
        }
    }

    /// <summary>Moves as many queued frames as fit in the buffer into <see cref="_taken"/>; at zero, the flush ends.</summary>
    private int Take()
    {
        lock (_lock)
        {
            int taken = 0;
            int bytes = 0;
            while (_count > 0)
            {
                var frame = _ring[_head]!;
                int body = frame.Body.Length;
                int need = MaxHeadBytes + (body <= GatherBodyMaxBytes ? body : 0);
                if (taken > 0 && bytes + need > _buffer.Length)
                {
                    break;
                }
                _ring[_head] = null;
                _head = (_head + 1) % _ring.Length;
                _count--;
                _taken[taken++] = frame;
                bytes += need;
            }
            if (taken == 0)
            {
                _flushing = false;
            }
            return taken;
        }
    }

    private void Break(Exception failure)
    {
        IOutgoingFrame?[] dropped;
        int count;
        lock (_lock)
        {
            if (_broken)
            {
                return;
            }
            _broken = true;
            count = _count;
            dropped = new IOutgoingFrame?[count];
            for (int i = 0; i < count; i++)
            {
                dropped[i] = _ring[(_head + i) % _ring.Length];
                _ring[(_head + i) % _ring.Length] = null;
            }
            _count = 0;
        }
        _failed(failure);
        foreach (var frame in dropped)
        {
            frame!.Sent();
        }
    }
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using Cairn.Core;
using Cairn.Core.Transport;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Nbd;

/// <summary>
/// One client connection: the handshake, then one receive loop that parses requests in place and a send path
/// serialized by <see cref="_sendLock"/>. Split by concern: Handshake, Transmission, Execution.
/// </summary>
/// <remarks>
/// Replies of requests that finished in the background never wait for the send lock: they join
/// <see cref="_replyQueue"/> and whoever holds the lock sends them before letting go of it. Waiting would cost a
/// thread-pool hop per reply (a third of the 1 MiB read replies at QD 8 found the lock taken).
/// Replies finished on an IO thread (a replicated write completes where its last replica's answer was read, often
/// several per receive) are not sent one by one: the first one schedules a flush at the end of that thread's batch of
/// events, and the flush writes every reply queued by then in one send. One send per write woke the client once per
/// write and was a fifth of the owner's CPU at QD 32 with 3 replicas.
/// </remarks>
internal sealed partial class NbdConnection : IFrontendConnection, IDisposable, IThreadPoolWorkItem
{
    /// <summary>Large enough to hold 32 pipelined 4 KiB writes (or read replies) so a QD32 batch costs one recv and one send.</summary>
    private const int BufferBytes = 256 * 1024;
    private static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(60);

    private readonly NbdServer _server;
    private readonly Socket _socket;
    private readonly ISocketTransport _transport;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    /// <summary>Finished replies waiting for the holder of <see cref="_sendLock"/>; each holds a pooled buffer and a slot.</summary>
    private readonly ConcurrentQueue<(byte[] Buffer, int Length)> _replyQueue = new();
    /// <summary>Replies smaller than this are copied together into <see cref="_gather"/> and sent in one write.</summary>
    private const int GatherReplyMaxBytes = 16 * 1024;
    private const int GatherBytes = 64 * 1024;
    /// <summary>Where the holder of <see cref="_sendLock"/> gathers queued small replies; rented on first use.</summary>
    private byte[]? _gather;
    /// <summary>1 while a flush of <see cref="_replyQueue"/> is deferred to the end of an IO thread's batch of events.</summary>
    private int _flushDeferred;
    /// <summary>Set once a send failed: queued replies are dropped (buffers and slots given back) instead of sent.</summary>
    private volatile bool _sendBroken;
    /// <summary>Slots for requests completing in the background; only the receive loop takes them.</summary>
    private readonly SemaphoreSlim _slots;
    private readonly int _maxInFlight;
    private byte[] _recv;
    private byte[] _send;
    private int _aborted;
    private ExportSession? _session;

    public NbdConnection(NbdServer server, Socket socket, ISocketTransport transport)
    {
        _server = server;
        _socket = socket;
        _transport = transport;
        _logger = server.Logger;
        _maxInFlight = server.Options.MaxInFlightPerConnection;
        _slots = new SemaphoreSlim(_maxInFlight, _maxInFlight);
        ClientDescription = $"nbd {socket.RemoteEndPoint}";
        _recv = ArrayPool<byte>.Shared.Rent(BufferBytes);
        _send = ArrayPool<byte>.Shared.Rent(BufferBytes);
    }

    public string ClientDescription { get; }

    public async Task RunAsync()
    {
        CancellationTokenRegistration revoked = default;
        try
        {
            _socket.NoDelay = true;
            bool negotiated;
            using (var timeout = new CancellationTokenSource(HandshakeTimeout))
            using (timeout.Token.Register(static s => ((NbdConnection)s!).Abort("handshake not finished within 60 s"), this))
            {
                negotiated = await HandshakeAsync();
            }
            if (!negotiated || _session is null)
            {
                return;
            }
            revoked = _session.Revoked.Register(static s => ((NbdConnection)s!).Abort("export revoked"), this);
            await TransmissionAsync();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or OperationCanceledException)
        {
            // The peer went away or we aborted the connection: nothing to answer, just clean up.
            _logger.LogDebug("NBD {Client} closed: {Reason}", ClientDescription, e.Message);
        }
        finally
        {
            await revoked.DisposeAsync();
            await DrainBackgroundAsync();
            CloseSocket();
            _session?.Dispose();
            ArrayPool<byte>.Shared.Return(_recv);
            ArrayPool<byte>.Shared.Return(_send);
            if (_gather is not null)
            {
                ArrayPool<byte>.Shared.Return(_gather); // every reply was sent or dropped: the drain took every slot back
            }
            _recv = _send = _gather = [];
            Dispose();
        }
    }

    /// <summary>Called by <see cref="RunAsync"/> once every background request has finished with the locks.</summary>
    public void Dispose()
    {
        _sendLock.Dispose();
        _slots.Dispose();
    }

    /// <summary>Drops the connection from any thread: pending receives and sends fail and the loop cleans up.</summary>
    public void Abort(string reason)
    {
        if (Interlocked.Exchange(ref _aborted, 1) == 0)
        {
            _logger.LogInformation("NBD {Client} dropped: {Reason}", ClientDescription, reason);
            CloseSocket();
        }
    }

    private void CloseSocket() => _transport.Close();

    /// <summary>Waits until every background request has replied (or failed to), by taking all slots back.</summary>
    private async Task DrainBackgroundAsync()
    {
        for (int i = 0; i < _maxInFlight; i++)
        {
            await _slots.WaitAsync();
        }
    }

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes; false when the peer closed first.</summary>
    private async ValueTask<bool> ReceiveExactAsync(Memory<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await _transport.ReceiveAsync(buffer[done..]);
            if (n == 0)
            {
                return false;
            }
            done += n;
        }
        return true;
    }

    private async ValueTask SendAllAsync(ReadOnlyMemory<byte> data)
    {
        while (!data.IsEmpty)
        {
            int n = await _transport.SendAsync(data);
            data = data[n..];
        }
    }

    /// <summary>Sends one complete message; the lock keeps replies from different requests from interleaving.</summary>
    private async ValueTask SendLockedAsync(ReadOnlyMemory<byte> data)
    {
        await _sendLock.WaitAsync();
        try
        {
            await SendAllAsync(data);
        }
        catch
        {
            _sendBroken = true;
            await SendQueuedAndReleaseAsync();
            throw;
        }
        await SendQueuedAndReleaseAsync();
    }

    /// <summary>
    /// Hands over a finished reply whose request holds a slot: <paramref name="buffer"/> (pooled) and the slot now belong
    /// to the queue, which gives both back once the reply is sent. Sends it at once when nobody else is sending; never
    /// waits for whoever is.
    /// </summary>
    private ValueTask QueueReplyAsync(byte[] buffer, int length)
    {
        _replyQueue.Enqueue((buffer, length));
        if (Interlocked.CompareExchange(ref _flushDeferred, 1, 0) == 0)
        {
            if (EpollLoop.TryDeferToEndOfBatch(this))
            {
                return ValueTask.CompletedTask; // replies finished by the rest of this batch leave with this one
            }
            Volatile.Write(ref _flushDeferred, 0); // not on an IO thread: send now
        }
        else
        {
            return ValueTask.CompletedTask; // a deferred flush, which runs after this enqueue, sends it
        }
        return _sendLock.Wait(0) ? SendQueuedAndReleaseAsync() : ValueTask.CompletedTask;
    }

    /// <summary>The deferred flush, at the end of the IO thread's batch: sends what queued up since it was scheduled.</summary>
    void IThreadPoolWorkItem.Execute()
    {
        Interlocked.Exchange(ref _flushDeferred, 0); // before taking the queue: a reply queued after this schedules anew
        if (_replyQueue.IsEmpty)
        {
            return; // a holder of the send lock sent them already (and the connection may be gone)
        }
        try
        {
            if (_sendLock.Wait(0)) // otherwise the holder sends them before it lets go of the lock
            {
                var sending = SendQueuedAndReleaseAsync(); // never throws: a failed send aborts the connection
                if (!sending.IsCompleted)
                {
                    _ = sending.AsTask(); // the socket was full: the send finishes when it drains
                }
            }
        }
        catch (ObjectDisposedException)
        {
            // The queue emptied and the connection ended between the check and the lock: nothing left to send.
        }
    }

    /// <summary>
    /// Run by the holder of the send lock: sends every queued reply, releases the lock, and takes it again if a reply
    /// arrived meanwhile (its owner found the lock held and left the reply to us). A failed send drops the connection.
    /// </summary>
    private async ValueTask SendQueuedAndReleaseAsync()
    {
        do
        {
            int finished = 0;
            int gathered = 0;
            while (_replyQueue.TryDequeue(out var reply))
            {
                try
                {
                    if (reply.Length <= GatherReplyMaxBytes)
                    {
                        _gather ??= ArrayPool<byte>.Shared.Rent(GatherBytes);
                        if (gathered + reply.Length > _gather.Length)
                        {
                            await SendGatheredAsync(gathered);
                            gathered = 0;
                        }
                        reply.Buffer.AsSpan(0, reply.Length).CopyTo(_gather.AsSpan(gathered));
                        gathered += reply.Length;
                    }
                    else
                    {
                        await SendGatheredAsync(gathered); // replies leave in the order they were queued
                        gathered = 0;
                        await SendUnlessBrokenAsync(reply.Buffer.AsMemory(0, reply.Length));
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(reply.Buffer);
                    finished++;
                }
            }
            await SendGatheredAsync(gathered);
            _sendLock.Release();
            if (finished > 0)
            {
                // After the lock: the last slot back lets the connection finish and dispose the lock.
                _slots.Release(finished);
            }
        }
        while (!_replyQueue.IsEmpty && _sendLock.Wait(0));
    }

    private ValueTask SendGatheredAsync(int count) => count == 0 ? ValueTask.CompletedTask : SendUnlessBrokenAsync(_gather.AsMemory(0, count));

    /// <summary>Sends one batch of replies; a failed send drops the connection, and every later reply is dropped with it.</summary>
    private async ValueTask SendUnlessBrokenAsync(ReadOnlyMemory<byte> data)
    {
        if (_sendBroken)
        {
            return;
        }
        try
        {
            await SendAllAsync(data);
        }
        catch (Exception e)
        {
            _sendBroken = true;
            Abort($"a reply could not be sent: {e.Message}");
        }
    }
}

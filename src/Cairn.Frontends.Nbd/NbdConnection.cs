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
/// </remarks>
internal sealed partial class NbdConnection : IFrontendConnection, IDisposable
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
            _recv = _send = [];
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
        return _sendLock.Wait(0) ? SendQueuedAndReleaseAsync() : ValueTask.CompletedTask;
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
            while (_replyQueue.TryDequeue(out var reply))
            {
                try
                {
                    if (!_sendBroken)
                    {
                        await SendAllAsync(reply.Buffer.AsMemory(0, reply.Length));
                    }
                }
                catch (Exception e)
                {
                    _sendBroken = true;
                    Abort($"a reply could not be sent: {e.Message}");
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(reply.Buffer);
                    finished++;
                }
            }
            _sendLock.Release();
            if (finished > 0)
            {
                // After the lock: the last slot back lets the connection finish and dispose the lock.
                _slots.Release(finished);
            }
        }
        while (!_replyQueue.IsEmpty && _sendLock.Wait(0));
    }
}

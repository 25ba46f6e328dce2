using System.Buffers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Cairn.Core;
using Cairn.Core.Transport;

namespace Cairn.Replication;

/// <summary>
/// One owner's connection: a hello naming the replica and the owner's epoch, then pipelined requests, executed
/// concurrently (up to <see cref="MaxInFlight"/>) and answered as they complete, in any order.
/// <list type="bullet">
/// <item>One receive loop reads as many bytes as the socket has and starts every complete request in them; one
/// <see cref="FrameSender"/> writes the replies, those made while a batch is parsed in one send.</item>
/// <item>A request runs on the receive loop until its device call completes or goes asynchronous; FLUSH and FUA
/// requests, which block on the disk, run on the thread pool so the writes behind them go on, and so do verifies
/// and snapshot block reads (a scrub's and a repair's cold reads) and grow and snapshot requests (synchronous metadata
/// changes).</item>
/// <item>Order: a request whose range overlaps one still executing (unless both only read: reads, verifies and
/// snapshot block reads) waits
/// for it, so overlapping changes apply in arrival order and a verify sees whole writes, as when requests ran one at a
/// time; grow, snapshot, delete-all-snapshots and revert requests wait until nothing executes, and everything after
/// them waits for them (but FLUSH). A FLUSH covers every write answered before it arrived: the device's flush covers
/// the writes completed before it was called.</item>
/// <item>A malformed frame, an unknown replica or a stale epoch at hello closes this connection only; requests already
/// started finish (and are answered if the socket still takes it) before it closes.</item>
/// </list>
/// Buffers belong to the connection and its slots, reused for every request: nothing is allocated per request.
/// </summary>
internal sealed partial class ReplicaConnection : IFrontendConnection, IDisposable
{
    /// <summary>Requests executing at once: as many as a <see cref="ReplicaLink"/> keeps in flight.</summary>
    public const int MaxInFlight = ReplicaLink.MaxInFlight;

    private const int ReceiveBufferBytes = 256 * 1024;
    /// <summary>Frames larger than this skip the receive buffer: the rest of their payload is read straight into their slot.</summary>
    private const int BufferedFrameMaxBytes = ReceiveBufferBytes / 2;
    private const int SendBufferBytes = 64 * 1024;

    private readonly ISocketTransport _transport;
    private readonly CancellationTokenSource _abort = new();
    private readonly ReplicaCatalog _catalog;
    private readonly FrontendLog _log;
    private readonly FrameSender _sender;
    private readonly RequestSlot[] _slots = new RequestSlot[MaxInFlight];
    private readonly int[] _free = new int[MaxInFlight];
    private readonly Lock _freeLock = new();
    /// <summary>Set whenever a slot stops executing or is freed: the receive loop waits on it for a slot or for a conflict to clear.</summary>
    private readonly AsyncSignal _changed = new();
    private int _freeCount;
    private byte[]? _recv;
    private int _start;
    private int _end;
    private ReplicaTarget? _target;

    public ReplicaConnection(Socket socket, ReplicaCatalog catalog, FrontendLog log)
    {
        ClientDescription = socket.RemoteEndPoint?.ToString() ?? "unknown";
        _transport = ReplicaTransport.Open(socket);
        _catalog = catalog;
        _log = log;
        _sender = new FrameSender(_transport, MaxInFlight, SendBufferBytes, e => Abort($"sending failed: {e.Message}"));
        for (int i = 0; i < MaxInFlight; i++)
        {
            _slots[i] = new RequestSlot(this, i);
            _free[i] = MaxInFlight - 1 - i;
        }
        _freeCount = MaxInFlight;
    }

    public string ClientDescription { get; }

    public async Task RunAsync()
    {
        _recv = ArrayPool<byte>.Shared.Rent(ReceiveBufferBytes);
        try
        {
            _target = await HelloAsync();
            if (_target is not null)
            {
                await ServeAsync();
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The owner went away or we were aborted: nothing more to answer.
        }
        finally
        {
            _sender.Uncork();
            await DrainAsync(); // requests still executing use their slots' buffers and may yet be answered
            ArrayPool<byte>.Shared.Return(_recv);
            Dispose();
        }
    }

    public void Dispose()
    {
        _transport.Close();
        _abort.Dispose();
    }

    /// <summary>Closes the socket (the receive loop ends) and cancels what the device still runs for this connection.</summary>
    public void Abort(string reason)
    {
        _transport.Close();
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Already finished.
        }
    }

    /// <summary>Parses and starts every complete request the socket delivered, sends the replies that batch made, reads more.</summary>
    private async Task ServeAsync()
    {
        var recv = _recv!;
        while (true)
        {
            _sender.Cork();
            while (_end - _start >= ReplicaProtocol.RequestHeaderSize)
            {
                if (!ReplicaRequest.TryDecode(recv.AsSpan(_start, ReplicaProtocol.RequestHeaderSize), out var request, out string error))
                {
                    _log.Warning($"replica {_target!.Name}: {error} from {ClientDescription}; closing the connection");
                    return;
                }
                int payloadBytes = request.CarriesPayload ? (int)request.Length : 0;
                int frameBytes = ReplicaProtocol.RequestHeaderSize + payloadBytes;
                if (_end - _start < frameBytes && frameBytes <= BufferedFrameMaxBytes)
                {
                    break; // the rest of the payload is still on its way
                }
                var slot = await TakeSlotAsync(request);
                _start += ReplicaProtocol.RequestHeaderSize;
                if (!await ReceivePayloadAsync(slot.Prepare(request), payloadBytes))
                {
                    slot.Abandon();
                    return;
                }
                slot.Start();
            }
            _sender.Uncork();
            CompactReceiveBuffer();
            int read = await _transport.ReceiveAsync(recv.AsMemory(_end));
            if (read == 0)
            {
                return;
            }
            _end += read;
        }
    }

    /// <summary>Copies the request's payload from the receive buffer into its slot; a frame too large for the buffer is read straight into it.</summary>
    private async ValueTask<bool> ReceivePayloadAsync(Memory<byte> destination, int payloadBytes)
    {
        int buffered = Math.Min(payloadBytes, _end - _start);
        _recv.AsSpan(_start, buffered).CopyTo(destination.Span);
        _start += buffered;
        if (buffered == payloadBytes)
        {
            return true;
        }
        _start = _end = 0;
        return await _transport.ReceiveExactlyAsync(destination[buffered..payloadBytes]);
    }

    private void CompactReceiveBuffer()
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_recv!.Length - _end < BufferedFrameMaxBytes)
        {
            // What remains is part of one frame of at most BufferedFrameMaxBytes: at the front it has room to complete.
            _recv.AsSpan(_start, _end - _start).CopyTo(_recv);
            _end -= _start;
            _start = 0;
        }
    }

    /// <summary>A free slot for <paramref name="request"/> once nothing it must follow is executing.</summary>
    private ValueTask<RequestSlot> TakeSlotAsync(in ReplicaRequest request) =>
        TryTakeSlot(request) is { } slot ? new ValueTask<RequestSlot>(slot) : TakeSlotSlowAsync(request);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<RequestSlot> TakeSlotSlowAsync(ReplicaRequest request)
    {
        _sender.Uncork(); // the replies made so far must not wait behind this request
        try
        {
            while (true)
            {
                await _changed.WaitAsync();
                if (TryTakeSlot(request) is { } slot)
                {
                    return slot;
                }
            }
        }
        finally
        {
            _sender.Cork();
        }
    }

    private RequestSlot? TryTakeSlot(in ReplicaRequest request)
    {
        if (MustWait(request))
        {
            return null;
        }
        lock (_freeLock)
        {
            return _freeCount == 0 ? null : _slots[_free[--_freeCount]];
        }
    }

    /// <summary>Whether <paramref name="request"/> must wait for a request still executing (see the class remarks).</summary>
    private bool MustWait(in ReplicaRequest request)
    {
        if (request.Op == ReplicaOp.Flush)
        {
            return false; // it covers what completed before it; it changes nothing a later request could overtake
        }
        bool control = !RequestSlot.HasRange(request.Op); // grow, snapshots, delete-all, revert and any op added later: a barrier
        foreach (var slot in _slots)
        {
            if (slot.Executing && (control || slot.Conflicts(request)))
            {
                return true;
            }
        }
        return false;
    }

    private void Release(int index)
    {
        lock (_freeLock)
        {
            _free[_freeCount++] = index;
        }
        _changed.Set();
    }

    private async Task DrainAsync()
    {
        while (true)
        {
            lock (_freeLock)
            {
                if (_freeCount == MaxInFlight)
                {
                    return;
                }
            }
            await _changed.WaitAsync();
        }
    }

    private ReplicaStatus StatusOf(Exception e)
    {
        if (e is OperationCanceledException or ObjectDisposedException)
        {
            return ReplicaStatus.Shutdown; // the connection is being aborted
        }
        _log.Error(e, $"replica {_target?.Name}: a request from {ClientDescription} failed unexpectedly");
        return ReplicaStatus.Io;
    }

    private async Task<ReplicaTarget?> HelloAsync()
    {
        byte[] header = new byte[ReplicaProtocol.HelloReplySize];
        if (!await _transport.ReceiveExactlyAsync(header.AsMemory(0, ReplicaProtocol.HelloHeaderSize)))
        {
            return null;
        }
        if (!ReplicaHello.TryDecodeHeader(header, out int nameLength, out ulong epoch, out string error))
        {
            _log.Warning($"replica hello from {ClientDescription}: {error}; closing the connection");
            return null;
        }
        byte[] name = new byte[nameLength];
        if (!await _transport.ReceiveExactlyAsync(name))
        {
            return null;
        }
        var target = _catalog.Find(System.Text.Encoding.UTF8.GetString(name));
        var status = target is null ? ReplicaStatus.Shutdown : target.TryAdmit(epoch) ? ReplicaStatus.Ok : ReplicaStatus.StaleEpoch;
        ReplicaHello.EncodeReply(header, status, target?.Epoch ?? 0, target?.Device.SizeBytes ?? 0);
        await _transport.SendAllAsync(header.AsMemory(0, ReplicaProtocol.HelloReplySize));
        return status == ReplicaStatus.Ok ? target : null;
    }
}

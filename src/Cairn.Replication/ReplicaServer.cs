using System.Net;
using System.Net.Sockets;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// The replica service's listener: accepts connections from volume owners and serves each with a
/// <see cref="ReplicaConnection"/> against the replicas in the <see cref="ReplicaCatalog"/>.
/// </summary>
public sealed class ReplicaServer(ReplicaCatalog catalog, FrontendLog log, int maxConnections = 1024) : IAsyncDisposable
{
    private readonly FrontendListener _listener = new("replica", maxConnections, socket => new ReplicaConnection(socket, catalog, log), log);

    public IPEndPoint LocalEndpoint => _listener.LocalEndpoint;

    public int ActiveConnections => _listener.ActiveConnections;

    public void Start(IPEndPoint endpoint) => _listener.Start(endpoint);

    public ValueTask DisposeAsync() => _listener.DisposeAsync();
}

/// <summary>
/// One owner's connection: a hello naming the replica and the owner's epoch, then requests executed in arrival order
/// and answered in that order. A malformed frame, an unknown replica or a stale epoch at hello closes this connection
/// only. Buffers are rented once per connection and reused for every request.
/// </summary>
internal sealed class ReplicaConnection(Socket socket, ReplicaCatalog catalog, FrontendLog log) : IFrontendConnection, IDisposable
{
    private readonly NetworkStream _stream = new(socket, ownsSocket: true);
    private readonly CancellationTokenSource _abort = new();

    public string ClientDescription { get; } = socket.RemoteEndPoint?.ToString() ?? "unknown";

    public async Task RunAsync()
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        byte[] payload = System.Buffers.ArrayPool<byte>.Shared.Rent(ReplicaProtocol.MaxPayloadBytes);
        try
        {
            var target = await HelloAsync(header, _abort.Token);
            if (target is null)
            {
                return;
            }
            while (await TryReadExactlyAsync(header, _abort.Token))
            {
                if (!ReplicaRequest.TryDecode(header, out var request, out string error))
                {
                    log.Warning($"replica {target.Name}: {error} from {ClientDescription}; closing the connection");
                    return;
                }
                var data = payload.AsMemory(0, BufferBytes(request));
                if (request.CarriesPayload && !await TryReadExactlyAsync(data, _abort.Token))
                {
                    return;
                }
                var status = await target.ExecuteAsync(request, data, data, _abort.Token);
                new ReplicaReply(status, request.Sequence).Encode(header);
                await _stream.WriteAsync(header.AsMemory(0, ReplicaProtocol.ReplyHeaderSize), _abort.Token);
                int replyPayload = ReplicaProtocol.ReplyPayloadBytes(request.Op, request.Length);
                if (replyPayload > 0 && status == ReplicaStatus.Ok)
                {
                    await _stream.WriteAsync(data[..replyPayload], _abort.Token);
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The owner went away or we were aborted: nothing to answer.
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(payload);
            Dispose();
        }
    }

    public void Dispose()
    {
        _stream.Dispose();
        _abort.Dispose();
    }

    private async Task<ReplicaTarget?> HelloAsync(byte[] header, CancellationToken cancellationToken)
    {
        if (!await TryReadExactlyAsync(header.AsMemory(0, ReplicaProtocol.HelloHeaderSize), cancellationToken))
        {
            return null;
        }
        if (!ReplicaHello.TryDecodeHeader(header, out int nameLength, out ulong epoch, out string error))
        {
            log.Warning($"replica hello from {ClientDescription}: {error}; closing the connection");
            return null;
        }
        byte[] name = new byte[nameLength];
        if (!await TryReadExactlyAsync(name, cancellationToken))
        {
            return null;
        }
        var target = catalog.Find(System.Text.Encoding.UTF8.GetString(name));
        var status = target is null ? ReplicaStatus.Shutdown : target.TryAdmit(epoch) ? ReplicaStatus.Ok : ReplicaStatus.StaleEpoch;
        ReplicaHello.EncodeReply(header, status, target?.Epoch ?? 0, target?.Device.SizeBytes ?? 0);
        await _stream.WriteAsync(header.AsMemory(0, ReplicaProtocol.HelloReplySize), cancellationToken);
        return status == ReplicaStatus.Ok ? target : null;
    }

    /// <summary>The request's payload, a read's data, or a verify's scratch (the range, then its bitmap): the buffer the request needs.</summary>
    private static int BufferBytes(ReplicaRequest request) => request.Op switch
    {
        ReplicaOp.Verify => Math.Max((int)request.Length, ReplicaProtocol.VerifyReplyBytes),
        ReplicaOp.Read => (int)request.Length,
        _ => request.CarriesPayload ? (int)request.Length : 0,
    };

    private async ValueTask<bool> TryReadExactlyAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int read = await _stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken);
        return read == buffer.Length;
    }

    public void Abort(string reason)
    {
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Already finished.
        }
    }
}

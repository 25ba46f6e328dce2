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
    private readonly FrontendListener _listener = new("replica", maxConnections, socket => Open(socket, catalog, log), log);

    public IPEndPoint LocalEndpoint => _listener.LocalEndpoint;

    public int ActiveConnections => _listener.ActiveConnections;

    public void Start(IPEndPoint endpoint) => _listener.Start(endpoint);

    public ValueTask DisposeAsync() => _listener.DisposeAsync();

    private static ReplicaConnection? Open(Socket socket, ReplicaCatalog catalog, FrontendLog log)
    {
        try
        {
            return new ReplicaConnection(socket, catalog, log);
        }
        catch (IOException e)
        {
            log.Warning($"replica connection from {socket.RemoteEndPoint} refused: {e.Message}");
            socket.Dispose();
            return null;
        }
    }
}

using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Cairn.Core;

/// <summary>One client connection of a frontend, run by a <see cref="FrontendListener"/>.</summary>
public interface IFrontendConnection
{
    string ClientDescription { get; }

    /// <summary>Serves the client until it leaves or the connection is aborted.</summary>
    Task RunAsync();

    /// <summary>Drops the connection; <see cref="RunAsync"/> then returns soon.</summary>
    void Abort(string reason);
}

/// <summary>How a <see cref="FrontendListener"/> reports what it cannot throw (Core carries no logging dependency).</summary>
public sealed record FrontendLog(Action<string> Info, Action<string> Warning, Action<Exception, string> Error);

/// <summary>
/// The listening half every frontend shares: bind with an error that says what to do, accept, enforce the
/// connection cap, run each connection off the accept loop, and on dispose stop accepting, abort every
/// connection and wait for them all. The protocol lives entirely in the connections it opens.
/// </summary>
public sealed class FrontendListener : IAsyncDisposable
{
    private readonly ConcurrentDictionary<IFrontendConnection, Task> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly string _protocol;
    private readonly int _maxConnections;
    private readonly Func<Socket, IFrontendConnection?> _open;
    private readonly FrontendLog _log;
    private Socket? _listener;
    private Task? _acceptLoop;
    private int _disposed;

    /// <param name="protocol">Name used in messages, e.g. "NBD".</param>
    /// <param name="open">Makes the connection for an accepted socket, or returns null after disposing the socket to refuse it.</param>
    public FrontendListener(string protocol, int maxConnections, Func<Socket, IFrontendConnection?> open, FrontendLog log)
    {
        ArgumentException.ThrowIfNullOrEmpty(protocol);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxConnections, 1);
        _protocol = protocol;
        _maxConnections = maxConnections;
        _open = open;
        _log = log;
    }

    public bool IsStarted => _listener is not null;

    /// <summary>The bound endpoint (with the real port when port 0 was asked for).</summary>
    public IPEndPoint LocalEndpoint =>
        (IPEndPoint?)_listener?.LocalEndPoint ?? throw new InvalidOperationException($"The {_protocol} server is not started; call StartAsync first.");

    public int ActiveConnections => _connections.Count;

    public void Start(IPEndPoint endpoint)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_listener is not null)
        {
            throw new InvalidOperationException($"The {_protocol} server is already started.");
        }
        var listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Bind(endpoint);
            listener.Listen(512);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new InvalidOperationException($"{_protocol} server cannot listen on {endpoint}: {e.Message}. Pick a free port or stop whatever holds it.", e);
        }
        _listener = listener;
        _acceptLoop = AcceptLoopAsync(listener);
        _log.Info($"{_protocol} server listening on {listener.LocalEndPoint}");
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stopping.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // A client that reset before we accepted it, or fd exhaustion: keep serving the others.
                _log.Warning($"{_protocol} accept failed: {e.SocketErrorCode}");
                await Task.Delay(10);
                continue;
            }
            try
            {
                // Every protocol served here answers with small replies, often several in flight: with Nagle's algorithm
                // a reply written while an earlier one is unacknowledged waits for the peer's (delayed) ACK.
                client.NoDelay = true;
            }
            catch (SocketException)
            {
                client.Dispose(); // reset before we got to it
                continue;
            }
            if (_connections.Count >= _maxConnections)
            {
                _log.Warning($"{_protocol} connection from {client.RemoteEndPoint} refused: {_maxConnections} connections already open (MaxConnections)");
                client.Dispose();
                continue;
            }
            if (_open(client) is { } connection)
            {
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _connections[connection] = done.Task;
                _ = RunConnectionAsync(connection, done);
            }
        }
    }

    private async Task RunConnectionAsync(IFrontendConnection connection, TaskCompletionSource done)
    {
        try
        {
            await Task.Yield(); // leave the accept loop at once: the connection's work starts on a pool thread
            await connection.RunAsync();
        }
        catch (Exception e)
        {
            _log.Error(e, $"{_protocol} connection {connection.ClientDescription} failed unexpectedly");
        }
        finally
        {
            _connections.TryRemove(connection, out _);
            done.TrySetResult();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _stopping.Cancel();
        _listener?.Dispose();
        if (_acceptLoop is not null)
        {
            await _acceptLoop;
        }
        foreach (var connection in _connections.Keys)
        {
            connection.Abort("server shutting down");
        }
        await Task.WhenAll(_connections.Values);
        _stopping.Dispose();
    }
}

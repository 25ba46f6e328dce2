using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Cairn.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.Frontends.Nbd;

/// <summary>
/// Serves the exports of an <see cref="IExportCatalog"/> over NBD (fixed newstyle, structured replies,
/// base:allocation). One accept loop; each connection runs one receive loop and one serialized send path.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly IExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<NbdConnection, Task> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private Socket? _listener;
    private EpollLoop[] _loops = [];
    private int _nextLoop;
    private Task? _acceptLoop;
    private int _disposed;

    public NbdServer(IExportCatalog catalog, NbdServerOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxRequestBytes < 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "MaxRequestBytes must be at least 4096 bytes.");
        }
        if (options.MaxConnections < 1 || options.MaxInFlightPerConnection < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "MaxConnections and MaxInFlightPerConnection must be at least 1.");
        }
        _catalog = catalog;
        _options = options;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The bound endpoint (with the real port when <see cref="NbdServerOptions.Endpoint"/> asked for port 0).</summary>
    public IPEndPoint LocalEndpoint =>
        (IPEndPoint?)_listener?.LocalEndPoint ?? throw new InvalidOperationException("The NBD server is not started; call StartAsync first.");

    public int ActiveConnections => _connections.Count;

    internal IExportCatalog Catalog => _catalog;
    internal NbdServerOptions Options => _options;
    internal ILogger Logger => _logger;

    public Task StartAsync(CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_listener is not null)
        {
            throw new InvalidOperationException("The NBD server is already started.");
        }
        var listener = new Socket(_options.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Bind(_options.Endpoint);
            listener.Listen(512);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new InvalidOperationException($"NBD server cannot listen on {_options.Endpoint}: {e.Message}. Pick a free port or stop whatever holds it.", e);
        }
        _listener = listener;
        if (_options.Transport == NbdTransportKind.Epoll && EpollInterop.IsSupported)
        {
            _loops = new EpollLoop[Math.Max(1, Environment.ProcessorCount)];
            for (int i = 0; i < _loops.Length; i++)
            {
                _loops[i] = new EpollLoop(i, e => _logger.LogError(e, "NBD IO thread error"));
            }
        }
        _acceptLoop = AcceptLoopAsync(listener);
        _logger.LogInformation("NBD server listening on {Endpoint}", listener.LocalEndPoint);
        if (_loops.Length == 0 && Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") != "1")
        {
            // Measured on 2 cores with fio QD32: without it every receive hops from the epoll thread to the
            // thread pool, costing about 3x the CPU per IO. It is process-wide, so only the host can set it.
            _logger.LogInformation("NBD: DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS is not 1; small-IO throughput will be lower (see src/Cairn.Frontends.Nbd/README.md)");
        }
        return Task.CompletedTask;
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
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // A client that reset before we accepted it, or fd exhaustion: keep serving the others.
                _logger.LogWarning("NBD accept failed: {Error}", e.SocketErrorCode);
                await Task.Delay(10);
                continue;
            }
            if (_connections.Count >= _options.MaxConnections)
            {
                _logger.LogWarning("NBD connection from {Remote} refused: {Max} connections already open (MaxConnections)", client.RemoteEndPoint, _options.MaxConnections);
                client.Dispose();
                continue;
            }
            StartConnection(client);
        }
    }

    private void StartConnection(Socket client)
    {
        INbdTransport transport;
        try
        {
            transport = _loops.Length > 0
                ? new EpollTransport(client, _loops[(int)((uint)Interlocked.Increment(ref _nextLoop) % (uint)_loops.Length)])
                : new SocketTransport(client);
        }
        catch (IOException e)
        {
            _logger.LogWarning("NBD connection from {Remote} refused: {Error}", client.RemoteEndPoint, e.Message);
            client.Dispose();
            return;
        }
        var connection = new NbdConnection(this, client, transport);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _connections[connection] = gate.Task;
        _ = RunConnectionAsync(connection, gate);
    }

    private async Task RunConnectionAsync(NbdConnection connection, TaskCompletionSource done)
    {
        try
        {
            // Leave the accept loop at once: the connection's first await happens on a pool thread.
            await Task.Yield();
            await connection.RunAsync();
        }
        catch (Exception e)
        {
            _logger.LogError(e, "NBD connection {Client} failed unexpectedly", connection.ClientDescription);
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
        foreach (var loop in _loops)
        {
            loop.Dispose();
        }
        _stopping.Dispose();
    }
}

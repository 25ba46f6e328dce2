using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Cairn.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.Frontends.Iscsi;

/// <summary>
/// Serves the exports of an <see cref="IExportCatalog"/> as iSCSI targets (RFC 7143): target <c>TargetPrefix + exportName</c>,
/// LUN 0 the volume, one portal group (tag 1). One accept loop; each connection runs one receive loop.
/// </summary>
public sealed class IscsiServer : IAsyncDisposable
{
    private readonly IExportCatalog _catalog;
    private readonly IscsiServerOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<IscsiConnection, Task> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private Socket? _listener;
    private Task? _acceptLoop;
    private int _disposed;
    private int _nextTsih;

    public IscsiServer(IExportCatalog catalog, IscsiServerOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxConnections < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "MaxConnections must be at least 1.");
        }
        if (string.IsNullOrEmpty(options.TargetPrefix) || !options.TargetPrefix.StartsWith("iqn.", StringComparison.Ordinal))
        {
            throw new ArgumentException($"TargetPrefix '{options.TargetPrefix}' must be an iqn. name prefix such as 'iqn.2026-11.io.cairn:'.", nameof(options));
        }
        _catalog = catalog;
        _options = options;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The bound endpoint (with the real port when <see cref="IscsiServerOptions.Endpoint"/> asked for port 0).</summary>
    public IPEndPoint LocalEndpoint =>
        (IPEndPoint?)_listener?.LocalEndPoint ?? throw new InvalidOperationException("The iSCSI server is not started; call StartAsync first.");

    public int ActiveConnections => _connections.Count;

    internal IExportCatalog Catalog => _catalog;
    internal IscsiServerOptions Options => _options;
    internal ILogger Logger => _logger;

    /// <summary>A session handle for a new session: never 0, which means "new session" on the wire.</summary>
    internal ushort AllocateTsih()
    {
        while (true)
        {
            ushort tsih = (ushort)Interlocked.Increment(ref _nextTsih);
            if (tsih != 0)
            {
                return tsih;
            }
        }
    }

    public Task StartAsync(CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_listener is not null)
        {
            throw new InvalidOperationException("The iSCSI server is already started.");
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
            throw new InvalidOperationException($"iSCSI server cannot listen on {_options.Endpoint}: {e.Message}. Pick a free port or stop whatever holds it.", e);
        }
        _listener = listener;
        _acceptLoop = AcceptLoopAsync(listener);
        _logger.LogInformation("iSCSI target listening on {Endpoint}", listener.LocalEndPoint);
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
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // A client that reset before we accepted it, or fd exhaustion: keep serving the others.
                _logger.LogWarning("iSCSI accept failed: {Error}", e.SocketErrorCode);
                await Task.Delay(10);
                continue;
            }
            if (_connections.Count >= _options.MaxConnections)
            {
                _logger.LogWarning("iSCSI connection from {Remote} refused: {Max} connections already open (MaxConnections)", client.RemoteEndPoint, _options.MaxConnections);
                client.Dispose();
                continue;
            }
            var connection = new IscsiConnection(this, client);
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _connections[connection] = done.Task;
            _ = RunConnectionAsync(connection, done);
        }
    }

    private async Task RunConnectionAsync(IscsiConnection connection, TaskCompletionSource done)
    {
        try
        {
            await Task.Yield(); // leave the accept loop at once
            await connection.RunAsync();
        }
        catch (Exception e)
        {
            _logger.LogError(e, "iSCSI connection {Client} failed unexpectedly", connection.ClientDescription);
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

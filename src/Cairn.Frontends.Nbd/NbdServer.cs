using System.Net;
using System.Net.Sockets;
using Cairn.Core;
using Cairn.Core.Transport;
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
    private readonly FrontendListener _frontend;
    private EpollLoopGroup? _loops;

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
        _frontend = new FrontendListener("NBD", options.MaxConnections, OpenConnection,
            new FrontendLog(m => _logger.LogInformation("{Message}", m), m => _logger.LogWarning("{Message}", m), (e, m) => _logger.LogError(e, "{Message}", m)));
    }

    /// <summary>The bound endpoint (with the real port when <see cref="NbdServerOptions.Endpoint"/> asked for port 0).</summary>
    public IPEndPoint LocalEndpoint =>
        _frontend.LocalEndpoint;

    public int ActiveConnections => _frontend.ActiveConnections;

    internal IExportCatalog Catalog => _catalog;
    internal NbdServerOptions Options => _options;
    internal ILogger Logger => _logger;

    public Task StartAsync(CancellationToken ct = default)
    {
        if (_frontend.IsStarted)
        {
            throw new InvalidOperationException("The NBD server is already started.");
        }
        // The process's IO threads, shared with the replica links (see IoThreads); they exist before the first accept.
        _loops = _options.Transport == NbdTransportKind.Epoll ? IoThreads.Group : null;
        _frontend.Start(_options.Endpoint);
        if (_loops is null && Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") != "1")
        {
            // Measured on 2 cores with fio QD32: without it every receive hops from the epoll thread to the
            // thread pool, costing about 3x the CPU per IO. It is process-wide, so only the host can set it.
            _logger.LogInformation("NBD: DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS is not 1; small-IO throughput will be lower (see src/Cairn.Frontends.Nbd/README.md)");
        }
        return Task.CompletedTask;
    }

    /// <summary>Wraps an accepted socket in the transport chosen at start; null refuses it.</summary>
    private NbdConnection? OpenConnection(Socket client)
    {
        ISocketTransport transport;
        try
        {
            transport = _loops is not null ? _loops.Open(client) : new SocketTransport(client);
        }
        catch (IOException e)
        {
            _logger.LogWarning("NBD connection from {Remote} refused: {Error}", client.RemoteEndPoint, e.Message);
            client.Dispose();
            return null;
        }
        return new NbdConnection(this, client, transport);
    }

    /// <summary>Stops accepting, aborts and drains every connection. The IO threads belong to the process and stay.</summary>
    public ValueTask DisposeAsync() => _frontend.DisposeAsync();
}

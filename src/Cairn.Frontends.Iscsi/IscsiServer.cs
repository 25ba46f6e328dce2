using System.Net;
using System.Runtime.CompilerServices;
using Cairn.Core;
using Cairn.Frontends.Iscsi.Scsi;
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
    private readonly FrontendListener _frontend;
    private int _nextTsih;
    /// <summary>Reservation state per volume, keyed by the device so a deleted and recreated volume starts clean.</summary>
    private readonly ConditionalWeakTable<IBlockDevice, PersistentReservations> _reservations = [];

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
        _frontend = new FrontendListener("iSCSI", options.MaxConnections, socket => new IscsiConnection(this, socket),
            new FrontendLog(m => _logger.LogInformation("{Message}", m), m => _logger.LogWarning("{Message}", m), (e, m) => _logger.LogError(e, "{Message}", m)));
    }

    /// <summary>The bound endpoint (with the real port when <see cref="IscsiServerOptions.Endpoint"/> asked for port 0).</summary>
    public IPEndPoint LocalEndpoint =>
        _frontend.LocalEndpoint;

    public int ActiveConnections => _frontend.ActiveConnections;

    internal IExportCatalog Catalog => _catalog;
    internal IscsiServerOptions Options => _options;
    internal ILogger Logger => _logger;

    /// <summary>The persistent reservations of a volume, shared by every session to it.</summary>
    internal PersistentReservations ReservationsOf(IBlockDevice device) => _reservations.GetValue(device, static _ => new PersistentReservations());

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
        _frontend.Start(_options.Endpoint);
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync() => _frontend.DisposeAsync();
}

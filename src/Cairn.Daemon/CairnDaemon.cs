using Cairn.Api;
using Cairn.ClusterStore;
using System.Net;
using Cairn.ControlPlane;
using Cairn.Frontends.Nbd;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace Cairn.Daemon;

/// <summary>
/// One running node: cluster store, pools, control plane, frontends and the REST API, wired together.
/// Start order is store → pools → control plane (reconcile) → frontends → API; stop is the reverse, so
/// nothing is served before the volumes are reconciled and every volume is flushed before its pool closes.
/// </summary>
public sealed class CairnDaemon : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly NbdServer _nbd;

    private CairnDaemon(WebApplication app, NbdServer nbd, string apiAddress)
    {
        _app = app;
        _nbd = nbd;
        ApiAddress = apiAddress;
    }

    /// <summary>The bound API base address, e.g. http://127.0.0.1:9410 (the real port when started with port 0).</summary>
    public string ApiAddress { get; }

    /// <summary>The bound NBD endpoint (the real port when started with port 0).</summary>
    public IPEndPoint NbdEndpoint => _nbd.LocalEndpoint;

    public int NbdConnections => _nbd.ActiveConnections;

    public VolumeService Volumes => _app.Services.GetRequiredService<VolumeService>();

    /// <summary>Cancelled when the host is asked to stop (SIGTERM, Ctrl-C).</summary>
    public CancellationToken Stopping => _app.Lifetime.ApplicationStopping;

    public static async Task<CairnDaemon> StartAsync(DaemonOptions options, CancellationToken cancellationToken = default)
    {
        var app = Build(options);
        NbdServer? nbd = null;
        try
        {
            var volumes = app.Services.GetRequiredService<VolumeService>();
            await volumes.StartAsync(cancellationToken); // reconcile before anything is served

            var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Cairn.Frontends.Nbd");
            nbd = new NbdServer(volumes, new NbdServerOptions { Endpoint = options.NbdListen }, logger);
            await nbd.StartAsync(cancellationToken);
            var nbdBound = nbd.LocalEndpoint;
            app.Services.GetRequiredService<ExportAddresses>().SetNbd(options.EffectiveAdvertiseHost(nbdBound), nbdBound.Port);

            await app.StartAsync(cancellationToken);
            string apiAddress = BoundAddress(app);
            options.Announce.WriteLine($"cairnd: api listening on {apiAddress}");
            options.Announce.WriteLine($"cairnd: nbd listening on {nbdBound}");
            options.Announce.WriteLine("cairnd: ready");
            options.Announce.Flush();
            return new CairnDaemon(app, nbd, apiAddress);
        }
        catch
        {
            if (nbd is not null)
            {
                await nbd.DisposeAsync();
            }
            await app.DisposeAsync();
            throw;
        }
    }

    private static WebApplication Build(DaemonOptions options)
    {
        string nodeName = options.EffectiveNodeName;
        if (!NodeNames.TryValidate(nodeName, out string nameError))
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, options.NodeName is null ? $"{nameError}; the host name is not usable as one, so pass --node NAME" : nameError);
        }
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ApplicationName = "cairnd", ContentRootPath = AppContext.BaseDirectory });
        builder.WebHost.UseUrls(options.ApiListen);
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning); // one line per request is noise at this request rate
        // stdout carries only the "cairnd: ..." lines scripts parse; logs go to stderr.
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);

        builder.Services.AddSingleton<IClusterStore>(sp => ClusterStoreFactory.Open(options.EffectiveClusterSpec,
            new EmbeddedClusterStoreOptions { Logger = sp.GetRequiredService<ILogger<EmbeddedClusterStore>>() },
            new EtcdClusterStoreOptions { Logger = sp.GetRequiredService<ILogger<EtcdClusterStore>>() }));
        builder.Services.AddSingleton(sp =>
        {
            var logger = sp.GetRequiredService<ILogger<PoolManager>>();
            return (options.OpenPools ?? PoolManager.OpenOrCreate)(options.EffectivePools, logger);
        });
        builder.Services.AddSingleton<ExportAddresses>();
        builder.Services.AddSingleton(sp => new VolumeService(
            sp.GetRequiredService<IClusterStore>(), sp.GetRequiredService<PoolManager>(), sp.GetRequiredService<ExportAddresses>(),
            sp.GetRequiredService<ILogger<VolumeService>>(), ownership: options.IsClustered ? VolumeOwnership.Clustered(nodeName) : VolumeOwnership.SingleNode(nodeName)));
        builder.Services.AddCairnApi();

        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages(); // unknown routes answer with problem+json too
        app.MapCairnApi();
        return app;
    }

    private static string BoundAddress(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        return addresses?.FirstOrDefault() ?? throw new InvalidOperationException("Kestrel reported no bound address");
    }

    /// <summary>Waits until the host is asked to stop (SIGTERM, Ctrl-C) or <paramref name="cancellationToken"/> fires.</summary>
    public async Task WaitForShutdownAsync(CancellationToken cancellationToken = default)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, Stopping);
        try
        {
            await Task.Delay(Timeout.Infinite, linked.Token);
        }
        catch (OperationCanceledException)
        {
            // Asked to stop: the normal way out.
        }
    }

    /// <summary>
    /// Stops NBD first (no more client IO), then the API, then flushes every volume and closes pools and the
    /// cluster store (DI disposes singletons in reverse order of creation: service, pools, store).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await _nbd.DisposeAsync();
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _app.StopAsync(grace.Token);
        }
        finally
        {
            await _app.DisposeAsync();
        }
    }
}

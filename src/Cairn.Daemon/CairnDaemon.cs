using Cairn.Api;
using Cairn.ClusterStore;
using System.Net;
using Cairn.ControlPlane;
using Cairn.Frontends.Iscsi;
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
    private readonly IscsiServer _iscsi;
    private readonly NodeMembership _membership;
    private readonly ControllerElection _election;
    private readonly ReplicationAgent? _replication;

    private CairnDaemon(WebApplication app, NbdServer nbd, IscsiServer iscsi, string apiAddress, NodeMembership membership, ControllerElection election,
        ReplicationAgent? replication)
    {
        _replication = replication;
        _app = app;
        _nbd = nbd;
        _iscsi = iscsi;
        ApiAddress = apiAddress;
        _membership = membership;
        _election = election;
    }

    public ClusterService Cluster => _app.Services.GetRequiredService<ClusterService>();

    /// <summary>Whether this node runs the controller right now.</summary>
    public bool IsController => _election.IsLeader;

    /// <summary>The bound API base address, e.g. http://127.0.0.1:9410 (the real port when started with port 0).</summary>
    public string ApiAddress { get; }

    /// <summary>The bound NBD endpoint (the real port when started with port 0).</summary>
    public IPEndPoint NbdEndpoint => _nbd.LocalEndpoint;

    public int NbdConnections => _nbd.ActiveConnections;

    /// <summary>The bound iSCSI endpoint (the real port when started with port 0).</summary>
    public IPEndPoint IscsiEndpoint => _iscsi.LocalEndpoint;

    public VolumeService Volumes => _app.Services.GetRequiredService<VolumeService>();

    /// <summary>Cancelled when the host is asked to stop (SIGTERM, Ctrl-C).</summary>
    public CancellationToken Stopping => _app.Lifetime.ApplicationStopping;

    public static async Task<CairnDaemon> StartAsync(DaemonOptions options, CancellationToken cancellationToken = default)
    {
        var app = Build(options);
        NbdServer? nbd = null;
        IscsiServer? iscsi = null;
        NodeMembership? membership = null;
        ControllerElection? election = null;
        ReplicationAgent? replication = null;
        try
        {
            var volumes = app.Services.GetRequiredService<VolumeService>();
            await volumes.StartAsync(cancellationToken); // reconcile before anything is served
            var view = app.Services.GetRequiredService<ClusterView>();
            await view.StartAsync(cancellationToken);

            var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Cairn.Frontends.Nbd");
            nbd = new NbdServer(volumes, new NbdServerOptions { Endpoint = options.NbdListen }, logger);
            await nbd.StartAsync(cancellationToken);
            var nbdBound = nbd.LocalEndpoint;
            app.Services.GetRequiredService<ExportAddresses>().SetNbd(options.EffectiveAdvertiseHost(nbdBound), nbdBound.Port);

            var iscsiLogger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Cairn.Frontends.Iscsi");
            var iscsiOptions = new IscsiServerOptions { Endpoint = options.IscsiListen, AdvertisedHost = options.AdvertiseHost };
            iscsi = new IscsiServer(volumes, iscsiOptions, iscsiLogger);
            await iscsi.StartAsync(cancellationToken);
            var iscsiBound = iscsi.LocalEndpoint;
            app.Services.GetRequiredService<ExportAddresses>().SetIscsi(options.EffectiveAdvertiseHost(iscsiBound), iscsiBound.Port, iscsiOptions.TargetPrefix);

            if (options.IsClustered)
            {
                replication = ReplicationAgent.Listen(options.ReplicaListen ?? new IPEndPoint(options.NbdListen.Address, 0), volumes, view,
                    app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Cairn.Replication"));
            }

            await app.StartAsync(cancellationToken);
            string apiAddress = BoundAddress(app);

            // Join the cluster only once the API and NBD addresses are known, then stand for controller.
            var store = app.Services.GetRequiredService<IClusterStore>();
            var loggers = app.Services.GetRequiredService<ILoggerFactory>();
            string nodeName = options.EffectiveNodeName;
            membership = new NodeMembership(store, new NodeIdentity(nodeName, options.Zone, options.Rack),
                NodeMembership.PoolsOf(app.Services.GetRequiredService<PoolManager>()),
                AdvertisedApi(apiAddress, options.EffectiveAdvertiseHost(nbdBound)), app.Services.GetRequiredService<ExportAddresses>().NbdBase,
                new MembershipOptions { LeaseTtl = options.LeaseTtl }, loggers.CreateLogger<NodeMembership>())
            {
                ReplicaAddress = replication is null ? null : $"{HostForAddress(options.EffectiveAdvertiseHost(replication.Endpoint))}:{replication.Endpoint.Port}",
            };
            await membership.StartAsync(cancellationToken);
            // Placement must see this node before "ready": a create right after start would otherwise find no node Up.
            await view.WaitUntilAsync(() => view.FindLiveNode(nodeName) is not null, TimeSpan.FromSeconds(30), cancellationToken);
            if (replication is not null)
            {
                await replication.StartAsync(membership, store, cancellationToken);
            }
            Controller? controller = null;
            election = new ControllerElection(store, nodeName, leading => controller!.RunAsync(leading), new ElectionOptions { LeaseTtl = options.LeaseTtl },
                loggers.CreateLogger<ControllerElection>());
            var elected = election;
            controller = new Controller(nodeName, store, view, () => elected.Term, loggers.CreateLogger<Controller>()) { ReplaceAfter = options.ReplaceAfter };
            election.Start();

            options.Announce.WriteLine($"cairnd: api listening on {apiAddress}");
            options.Announce.WriteLine($"cairnd: nbd listening on {nbdBound}");
            options.Announce.WriteLine($"cairnd: iscsi listening on {iscsi.LocalEndpoint}");
            if (replication is not null)
            {
                options.Announce.WriteLine($"cairnd: replica service listening on {replication.Endpoint}");
            }
            options.Announce.WriteLine("cairnd: ready");
            options.Announce.Flush();
            return new CairnDaemon(app, nbd, iscsi, apiAddress, membership, election, replication);
        }
        catch
        {
            if (election is not null)
            {
                await election.DisposeAsync();
            }
            if (membership is not null)
            {
                await membership.DisposeAsync();
            }
            if (replication is not null)
            {
                await replication.DisposeAsync();
            }
            if (iscsi is not null)
            {
                await iscsi.DisposeAsync();
            }
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
            sp.GetRequiredService<ILogger<VolumeService>>(), ownership: options.IsClustered ? VolumeOwnership.Clustered(nodeName) : VolumeOwnership.SingleNode(nodeName),
            isDraining: ct => sp.GetRequiredService<ClusterService>().IsDrainingAsync(nodeName, ct)));
        builder.Services.AddSingleton(sp => new ClusterService(sp.GetRequiredService<IClusterStore>(), nodeName,
            options.IsClustered ? "etcd" : "embedded", sp.GetRequiredService<ILogger<ClusterService>>()));
        builder.Services.AddSingleton(sp => new ClusterView(sp.GetRequiredService<IClusterStore>(), nodeName, sp.GetRequiredService<ILogger<ClusterView>>()));
        builder.Services.AddCairnApi();
        if (options.ScrubInterval is { } scrubInterval)
        {
            builder.Services.AddHostedService(sp => new ScrubScheduler(sp.GetRequiredService<VolumeService>(), scrubInterval, options.ScrubBytesPerSecond));
        }

        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages(); // unknown routes answer with problem+json too
        app.MapCairnApi();
        return app;
    }

    /// <summary>The API address other nodes and clients should dial: a wildcard listen address becomes the advertised host.</summary>
    private static string AdvertisedApi(string bound, string advertiseHost)
    {
        var uri = new Uri(bound);
        if (uri.Host is not ("0.0.0.0" or "[::]" or "::"))
        {
            return bound;
        }
        string host = advertiseHost.Contains(':', StringComparison.Ordinal) && !advertiseHost.StartsWith('[') ? $"[{advertiseHost}]" : advertiseHost;
        return $"{uri.Scheme}://{host}:{uri.Port}";
    }

    /// <summary>An IPv6 literal in host:port form needs brackets.</summary>
    private static string HostForAddress(string host) =>
        host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('[') ? $"[{host}]" : host;

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
    /// Resigns as controller and leaves the cluster (revoking the leases), stops NBD and iSCSI (no more client IO), then the API, then flushes every volume and closes pools and the
    /// cluster store (DI disposes singletons in reverse order of creation: service, pools, store).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await _election.DisposeAsync();   // resign first, so another node takes over without waiting for expiry
            await _membership.DisposeAsync(); // then show Down at once
            await _nbd.DisposeAsync();
            await _iscsi.DisposeAsync();
            if (_replication is not null)
            {
                await _replication.DisposeAsync();
            }
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _app.StopAsync(grace.Token);
        }
        finally
        {
            await _app.DisposeAsync();
        }
    }
}

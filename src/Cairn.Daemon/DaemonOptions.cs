using System.Net;
using Cairn.ControlPlane;

namespace Cairn.Daemon;

/// <summary>Everything cairnd needs to start; the command line fills it, tests build it directly.</summary>
public sealed record DaemonOptions
{
    public string DataDirectory { get; init; } = "./cairn-data";

    /// <summary>Empty = one pool at DATA/pools/default.</summary>
    public IReadOnlyList<PoolConfig> Pools { get; init; } = [];

    public IPEndPoint NbdListen { get; init; } = new(IPAddress.Loopback, 10809);

    public IPEndPoint IscsiListen { get; init; } = new(IPAddress.Loopback, 3260);

    /// <summary>Where the replica service listens for owners of replicated volumes (cluster mode only); null = the NBD
    /// listen address on any free port.</summary>
    public IPEndPoint? ReplicaListen { get; init; }

    /// <summary>How long a replica's node may be Down before the controller replaces the replica on another node.</summary>
    public TimeSpan ReplaceAfter { get; init; } = TimeSpan.FromMinutes(5);

    public string ApiListen { get; init; } = "http://127.0.0.1:9410";

    /// <summary>Host put in export addresses; null = the NBD listen address (or this machine's name when listening on any address).</summary>
    public string? AdvertiseHost { get; init; }

    /// <summary>Where the machine-readable "cairnd: ..." lines go (stdout for the real daemon).</summary>
    public TextWriter Announce { get; init; } = Console.Out;

    public LogLevel MinimumLogLevel { get; init; } = LogLevel.Information;

    /// <summary>Opens the pools; tests swap in memory pools. Default: <see cref="PoolManager.OpenOrCreate(IEnumerable{PoolConfig}, ILogger?)"/>.</summary>
    public Func<IReadOnlyList<PoolConfig>, ILogger, PoolManager>? OpenPools { get; init; }

    public string ClusterStoreDirectory => Path.Combine(DataDirectory, "cluster-store");

    /// <summary>The cluster store: <c>etcd://HOST:2379[,HOST:2379...]</c>, or null for the embedded store in DATA/cluster-store.</summary>
    public string? Cluster { get; init; }

    /// <summary>This node's name, its identity across restarts. Null = this machine's host name (lowercased).</summary>
    public string? NodeName { get; init; }

    public string Zone { get; init; } = "default";

    public string Rack { get; init; } = "default";

    /// <summary>TTL of the heartbeat and controller-election leases: a dead node shows Down, and a new controller is elected, within about this.</summary>
    public TimeSpan LeaseTtl { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>How often every volume is scrubbed in the background; null = never (scrub on demand through the API).</summary>
    public TimeSpan? ScrubInterval { get; init; }

    /// <summary>Bytes per second a scheduled scrub reads at most.</summary>
    public long ScrubBytesPerSecond { get; init; } = ScrubScheduler.DefaultBytesPerSecond;

    public string EffectiveClusterSpec => Cluster ?? ClusterStoreDirectory;

    public bool IsClustered => Cluster is not null && ClusterStore.ClusterStoreFactory.IsEtcd(Cluster);

    public string EffectiveNodeName => NodeName ?? Dns.GetHostName().ToLowerInvariant();

    public IReadOnlyList<PoolConfig> EffectivePools =>
        Pools.Count > 0 ? Pools : [new PoolConfig(Path.Combine(DataDirectory, "pools", "default"))];

    public string EffectiveAdvertiseHost(IPEndPoint nbdBound) =>
        AdvertiseHost ?? (nbdBound.Address.Equals(IPAddress.Any) || nbdBound.Address.Equals(IPAddress.IPv6Any) ? Dns.GetHostName() : nbdBound.Address.ToString());
}

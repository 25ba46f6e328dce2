using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;

namespace Cairn.Testing;

/// <summary>
/// A real etcd and N real cairnd processes, each in its own Linux network namespace, so that links can be cut.
/// <code>
///   root ns (the test)  10.77.X.1 ──┐
///   hub ns: bridge br0, etcd 10.77.X.2 ──┬── veth ── ns n1: cairnd 10.77.X.11 (api :9410, nbd :10809)
///                                        ├── veth ── ns n2: cairnd 10.77.X.12
///                                        └── veth ── ns n3: cairnd 10.77.X.13
/// </code>
/// Names carry a run id (cairnft-PID-HEX) and the subnet's X is random and unused, so runs side by side do not collide;
/// disposing kills every process and deletes every namespace (which takes the veths and the bridge with it), and
/// starting sweeps what a crashed earlier run left (<see cref="SweepLeftoversAsync"/>). Needs root.
/// </summary>
public sealed partial class NetnsCluster : IAsyncDisposable
{
    public const string Prefix = "cairnft-";
    private const int EtcdClientPort = 2379;
    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(120);

    private readonly NetnsClusterOptions _options;
    private readonly List<NetnsNode> _nodes = [];
    private NamespacedProcess? _etcd;
    private readonly List<string> _namespaces = [];

    private NetnsCluster(NetnsClusterOptions options, string runId, int subnet)
    {
        _options = options;
        RunId = runId;
        Subnet = subnet;
        WorkDirectory = Path.Combine(Path.GetTempPath(), runId);
        Directory.CreateDirectory(WorkDirectory);
    }

    /// <summary>cairnft-PID-HEX: the prefix of every namespace and the work directory of this run.</summary>
    public string RunId { get; }

    /// <summary>X in 10.77.X.0/24.</summary>
    public int Subnet { get; }

    public string WorkDirectory { get; }

    public string HostIp => Address(1);

    public string EtcdIp => Address(2);

    /// <summary>--cluster for cairnd and anything else that talks to this etcd.</summary>
    public string EtcdSpec => $"etcd://{EtcdIp}:{EtcdClientPort}";

    public Uri EtcdUrl => new($"http://{EtcdIp}:{EtcdClientPort}");

    public IReadOnlyList<NetnsNode> Nodes => _nodes;

    public NetnsNode this[string name] => _nodes.Single(n => n.Name == name);

    /// <summary>The drive under <see cref="NetnsClusterOptions.FaultyDriveNode"/>'s pool, or null.</summary>
    public FaultyDrive? Drive { get; private set; }

    /// <summary>The node whose pool lives on <see cref="Drive"/>, or null.</summary>
    public NetnsNode? DriveNode => Drive is null ? null : _nodes.Single(n => n.Index == _options.FaultyDriveNode);

    private string HubNamespace => RunId + "-hub";

    private string RootLink => "cf" + RunId[^6..] + "r";

    private string Address(int host) => $"10.77.{Subnet}.{host}";

    private void Log(string line) => _options.Log?.Invoke($"[{RunId}] {line}");

    /// <summary>Builds the network, starts etcd and every node, and waits until all are ready.</summary>
    public static async Task<NetnsCluster> StartAsync(NetnsClusterOptions options)
    {
        if (Environment.UserName != "root" && !string.Equals(Environment.GetEnvironmentVariable("USER"), "root", StringComparison.Ordinal))
        {
            throw new InvalidOperationException("NetnsCluster needs root (ip netns, veth, losetup, mount); run the tests as root as CI does");
        }
        await SweepLeftoversAsync(options.Log);
        string runId = $"{Prefix}{Environment.ProcessId}-{RandomNumberGenerator.GetHexString(6, lowercase: true)}";
        var cluster = new NetnsCluster(options, runId, await FreeSubnetAsync());
        try
        {
            var clock = Stopwatch.StartNew();
            await cluster.BuildNetworkAsync();
            await cluster.StartEtcdAsync();
            if (options.FaultyDriveNode > 0)
            {
                cluster.Drive = await FaultyDrive.CreateAsync(Path.Combine(cluster.WorkDirectory, "drive"), options.FaultyDriveBytes);
            }
            cluster.DefineNodes();
            await Task.WhenAll(cluster._nodes.Select(cluster.StartNodeAsync));
            cluster.Log($"up in {clock.Elapsed.TotalSeconds:F1} s: etcd {cluster.EtcdIp}, {string.Join(", ", cluster._nodes)}");
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>A 10.77.X.0/24 that no address of the root namespace is in (another run's bridge, a real network).</summary>
    private static async Task<int> FreeSubnetAsync()
    {
        string addresses = await HostCommand.RunAsync("ip", "-4", "-o", "addr", "show");
        var candidates = Enumerable.Range(1, 254).Where(x => !addresses.Contains($" 10.77.{x}.", StringComparison.Ordinal)).ToArray();
        return candidates.Length > 0
            ? candidates[Random.Shared.Next(candidates.Length)]
            : throw new InvalidOperationException("every 10.77.X.0/24 is in use in the root namespace");
    }

    private async Task BuildNetworkAsync()
    {
        await AddNamespaceAsync(HubNamespace);
        await Ip("-n", HubNamespace, "link", "add", "br0", "type", "bridge");
        await Ip("-n", HubNamespace, "addr", "add", EtcdIp + "/24", "dev", "br0");
        await Ip("-n", HubNamespace, "link", "set", "br0", "up");
        // The test process's own leg on the bridge: it reaches every node's API and NBD port through it.
        await Ip("link", "add", RootLink, "type", "veth", "peer", "name", "root0", "netns", HubNamespace);
        await Ip("-n", HubNamespace, "link", "set", "root0", "master", "br0", "up");
        await Ip("addr", "add", HostIp + "/24", "dev", RootLink);
        await Ip("link", "set", RootLink, "up");
    }

    private async Task AddNamespaceAsync(string name)
    {
        await Ip("netns", "add", name);
        _namespaces.Add(name);
        await Ip("-n", name, "link", "set", "lo", "up");
    }

    private async Task AddNodeNetworkAsync(NetnsNode node)
    {
        await AddNamespaceAsync(node.Namespace);
        await Ip("-n", HubNamespace, "link", "add", node.HubLink, "type", "veth", "peer", "name", "eth0", "netns", node.Namespace);
        await Ip("-n", HubNamespace, "link", "set", node.HubLink, "master", "br0", "up");
        await Ip("-n", node.Namespace, "addr", "add", node.Ip + "/24", "dev", "eth0");
        await Ip("-n", node.Namespace, "link", "set", "eth0", "up");
    }

    private async Task StartEtcdAsync()
    {
        string dir = Path.Combine(WorkDirectory, "etcd");
        Directory.CreateDirectory(dir);
        string client = EtcdUrl.ToString().TrimEnd('/');
        string peer = "http://127.0.0.1:2380";
        _etcd = NamespacedProcess.Start(HubNamespace, EtcdServer.Binary,
        [
            "--name", "hub", "--data-dir", Path.Combine(dir, "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", $"hub={peer}",
            "--initial-cluster-token", RunId,
            // One member: a short election timeout starts it quickly and lets leases be as short as 1 s.
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ], Path.Combine(dir, "etcd.log"));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        await Eventually.HoldsAsync(async () =>
        {
            if (!_etcd.IsRunning)
            {
                throw new InvalidOperationException($"etcd exited while starting:\n{_etcd.Tail()}");
            }
            try
            {
                using var response = await http.PostAsync(new Uri(EtcdUrl, "/v3/kv/range"), new StringContent("{\"key\":\"AA==\"}"));
                return response.IsSuccessStatusCode;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                return false;
            }
        }, StartDeadline, $"etcd answers on {EtcdUrl} from the root namespace");
    }

    private void DefineNodes()
    {
        for (int i = 1; i <= _options.Nodes; i++)
        {
            string data = Path.Combine(WorkDirectory, $"n{i}");
            Directory.CreateDirectory(data);
            string pool = i == _options.FaultyDriveNode && Drive is not null
                ? Path.Combine(Drive.MountPath, "pool")
                : Path.Combine(data, "pools", "default");
            string spec = _options.PoolCapacity is { } size ? $"{pool}:{size}" : pool;
            _nodes.Add(new NetnsNode(i, $"n{i}", $"{RunId}-n{i}", Address(10 + i), $"cf{RunId[^6..]}h{i}", data, spec));
        }
    }

    private async Task StartNodeAsync(NetnsNode node)
    {
        await AddNodeNetworkAsync(node);
        await LaunchAsync(node);
    }

    private async Task LaunchAsync(NetnsNode node)
    {
        string ttl = _options.LeaseTtlSeconds.ToString(CultureInfo.InvariantCulture);
        node.Process = NamespacedProcess.Start(node.Namespace, _options.DaemonPath,
        [
            "--data-dir", node.DataDirectory, "--pool", node.PoolSpec, "--cluster", EtcdSpec,
            "--node", node.Name, "--zone", $"z{node.Index}", "--rack", "r1", "--lease-ttl", ttl,
            "--advertise-host", node.Ip, "--api-listen", node.ApiUrl,
            "--nbd-listen", $"{node.Ip}:{NetnsNode.NbdPort}", "--iscsi-listen", $"{node.Ip}:{NetnsNode.IscsiPort}",
        ], node.LogPath, line => line.StartsWith("cairnd: ready", StringComparison.Ordinal));
        await node.Process.WaitReadyAsync(StartDeadline, $"cairnd {node}");
    }

    /// <summary>SIGKILL: the node crashes; its namespace, address and data stay.</summary>
    public async Task Kill9Async(NetnsNode node)
    {
        Log($"kill -9 {node.Name} (pid {node.Process?.Pid})");
        if (node.Process is { } process)
        {
            await process.KillAsync();
        }
    }

    /// <summary>Starts the node again on the same data directory (after a kill, or kills it first).</summary>
    public async Task RestartAsync(NetnsNode node)
    {
        if (node.Process is { } old)
        {
            await old.DisposeAsync();
        }
        Log($"restart {node.Name}");
        await LaunchAsync(node);
    }

    private static Task<string> Ip(params string[] arguments) => HostCommand.RunAsync("ip", arguments);

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes)
        {
            if (node.Process is { } process)
            {
                await process.DisposeAsync();
            }
        }
        if (_etcd is not null)
        {
            await _etcd.DisposeAsync();
        }
        if (Drive is not null)
        {
            await Drive.DisposeAsync();
        }
        foreach (string ns in Enumerable.Reverse(_namespaces))
        {
            await RemoveNamespaceAsync(ns);
        }
        await HostCommand.TryAsync("ip", "link", "del", RootLink); // gone with the hub already, unless the hub never came up
        TryDeleteDirectory(WorkDirectory);
    }

    private static void TryDeleteDirectory(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A mount left behind by a failure: the next run's sweep unmounts and deletes it.
        }
    }
}

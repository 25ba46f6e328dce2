using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Cairn.Testing;

/// <summary>
/// A real single-member etcd on free loopback ports and a temporary data directory. It can be stopped (killed, like a
/// crash) and started again on the same directory and ports. Disposing kills it and deletes the directory.
/// </summary>
public sealed class EtcdServer : IAsyncDisposable
{
    public const string Binary = "/usr/bin/etcd";

    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(30);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-etcd-" + Guid.NewGuid().ToString("N"));
    private readonly Queue<string> _logTail = new();
    private Process? _process;

    private string _name = "t";
    private string? _initialCluster;
    private string? _clusterToken;

    private EtcdServer(int clientPort, int peerPort)
    {
        ClientPort = clientPort;
        PeerPort = peerPort;
    }

    /// <summary>Starts an <paramref name="size"/>-member cluster on loopback and waits until every member serves reads.</summary>
    public static async Task<IReadOnlyList<EtcdServer>> StartClusterAsync(int size)
    {
        CheckInstalled();
        var ports = new HashSet<int>();
        while (ports.Count < size * 2)
        {
            ports.Add(FreePort());
        }
        var list = ports.ToList();
        var members = Enumerable.Range(0, size).Select(i => new EtcdServer(list[2 * i], list[2 * i + 1]) { _name = $"m{i}" }).ToList();
        string cluster = string.Join(',', members.Select(m => $"{m._name}=http://127.0.0.1:{m.PeerPort}"));
        try
        {
            foreach (var member in members)
            {
                member._initialCluster = cluster;
                member._clusterToken = $"cairn-test-{members[0].PeerPort}";
                member.Launch(); // all at once: none can elect a leader alone
            }
            foreach (var member in members)
            {
                await member.WaitUntilServingAsync();
            }
        }
        catch
        {
            foreach (var member in members)
            {
                await member.DisposeAsync();
            }
            throw;
        }
        return members;
    }

    /// <summary>Whether this member is its cluster's raft leader right now.</summary>
    public async Task<bool> IsLeaderAsync()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        using var response = await http.PostAsync(new Uri(ClientUrl, "/v3/maintenance/status"), new StringContent("{}"));
        using var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = json.RootElement;
        return root.GetProperty("leader").GetString() == root.GetProperty("header").GetProperty("member_id").GetString();
    }

    private static void CheckInstalled()
    {
        if (!File.Exists(Binary))
        {
            throw new InvalidOperationException($"{Binary} is missing: install the Debian package etcd-server (scripts/setup.sh does)");
        }
    }

    public int ClientPort { get; }

    public int PeerPort { get; }

    public Uri ClientUrl => new($"http://127.0.0.1:{ClientPort}");

    public string Spec => $"etcd://127.0.0.1:{ClientPort}";

    public static async Task<EtcdServer> StartAsync()
    {
        CheckInstalled();
        int clientPort = FreePort();
        int peerPort;
        while ((peerPort = FreePort()) == clientPort)
        {
        }
        var server = new EtcdServer(clientPort, peerPort);
        try
        {
            await server.StartAgainAsync();
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
        return server;
    }

    /// <summary>Starts etcd (again) on the same data directory and ports and waits until it serves reads.</summary>
    public async Task StartAgainAsync()
    {
        if (_process is { HasExited: false })
        {
            return;
        }
        Launch();
        await WaitUntilServingAsync();
    }

    private void Launch()
    {
        string peer = $"http://127.0.0.1:{PeerPort}";
        string client = $"http://127.0.0.1:{ClientPort}";
        var info = new ProcessStartInfo(Binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in new[]
                 {
                     "--name", _name, "--data-dir", Path.Combine(_dir, "data"),
                     "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", _initialCluster ?? $"{_name}={peer}", "--initial-cluster-token", _clusterToken ?? $"cairn-test-{PeerPort}",
                     // A lone member: short election timeout makes startup quick and lowers etcd's minimum lease TTL to 1 s.
                     "--heartbeat-interval", "50", "--election-timeout", "500",
                 })
        {
            info.ArgumentList.Add(arg);
        }
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {Binary}");
        process.OutputDataReceived += (_, e) => Remember(e.Data);
        process.ErrorDataReceived += (_, e) => Remember(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
    }

    private async Task WaitUntilServingAsync()
    {
        var process = _process ?? throw new InvalidOperationException("etcd is not running");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"etcd exited with code {process.ExitCode} while starting:\n{LogTail()}");
            }
            try
            {
                using var response = await http.PostAsync(new Uri(ClientUrl, "/v3/kv/range"), new StringContent("{\"key\":\"AA==\"}"));
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
            }
            if (deadline.Elapsed > StartDeadline)
            {
                throw new TimeoutException($"etcd did not answer on {ClientUrl} within {StartDeadline.TotalSeconds} s:\n{LogTail()}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>Kills etcd as a crash would (its WAL keeps every committed write) and waits until it is gone.</summary>
    public async Task StopAsync()
    {
        if (_process is { } process)
        {
            _process = null;
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
            await process.WaitForExitAsync();
            process.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private void Remember(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_logTail)
        {
            _logTail.Enqueue(line);
            while (_logTail.Count > 30)
            {
                _logTail.Dequeue();
            }
        }
    }

    private string LogTail()
    {
        lock (_logTail)
        {
            return string.Join('\n', _logTail);
        }
    }

    /// <summary>A loopback port nothing listens on right now.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

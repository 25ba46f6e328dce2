using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Cairn.ClusterStore.Tests;

/// <summary>
/// A real single-member etcd on free loopback ports and a temporary data directory. It can be stopped (killed, like a
/// crash) and started again on the same directory and ports. Disposing kills it and deletes the directory.
/// </summary>
public sealed class EtcdServer : IAsyncDisposable
{
    public const string Binary = "/usr/bin/etcd";

    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new();
    private readonly Queue<string> _logTail = new();
    private Process? _process;

    private EtcdServer(int clientPort, int peerPort)
    {
        ClientPort = clientPort;
        PeerPort = peerPort;
    }

    public int ClientPort { get; }

    public int PeerPort { get; }

    public Uri ClientUrl => new($"http://127.0.0.1:{ClientPort}");

    public string Spec => $"etcd://127.0.0.1:{ClientPort}";

    public static async Task<EtcdServer> StartAsync()
    {
        if (!File.Exists(Binary))
        {
            throw new InvalidOperationException($"{Binary} is missing: install the Debian package etcd-server (scripts/setup.sh does)");
        }
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
                     "--name", "t", "--data-dir", Path.Combine(_dir.Path, "data"),
                     "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", $"t={peer}",
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
        _dir.Dispose();
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

using System.CommandLine;
using System.Net;
using Cairn.ClusterStore;
using Cairn.ControlPlane;
using Cairn.Core;
using Cairn.Core.Transport;

namespace Cairn.Daemon;

/// <summary>cairnd's command line: parses flags into <see cref="DaemonOptions"/>, runs until SIGTERM or Ctrl-C.</summary>
public static class DaemonCommandLine
{
    /// <summary>Runs cairnd until SIGTERM, Ctrl-C or <paramref name="cancellationToken"/>; returns the exit code.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        var dataDir = new Option<string>("--data-dir") { Description = "Directory for the cluster store and default pool.", DefaultValueFactory = _ => "./cairn-data", HelpName = "DIR" };
        var pools = new Option<string[]>("--pool")
        {
            Description = "A pool directory, optionally with a capacity for a new pool (e.g. /srv/pools/fast:100GiB). Repeatable. Default: DATA/pools/default.",
            HelpName = "PATH[:SIZE]",
        };
        var nbdListen = new Option<string>("--nbd-listen") { Description = "Address and port the NBD server listens on (port 0 = any free port).", DefaultValueFactory = _ => "127.0.0.1:10809", HelpName = "ADDR:PORT" };
        var iscsiListen = new Option<string>("--iscsi-listen") { Description = "Address and port the iSCSI target listens on (port 0 = any free port).", DefaultValueFactory = _ => "127.0.0.1:3260", HelpName = "ADDR:PORT" };
        var replicaListen = new Option<string?>("--replica-listen") { Description = "Address and port the replica service listens on for other nodes (cluster mode). Default: the NBD listen address, any free port.", HelpName = "ADDR:PORT" };
        var apiListen = new Option<string>("--api-listen") { Description = "URL the REST API listens on (port 0 = any free port).", DefaultValueFactory = _ => "http://127.0.0.1:9410", HelpName = "URL" };
        var advertise = new Option<string?>("--advertise-host") { Description = "Host name or address put in export addresses. Default: the NBD listen address.", HelpName = "HOST" };
        var cluster = new Option<string?>("--cluster") { Description = "Cluster store: etcd://HOST:2379[,HOST:2379...]. Default: a single node on the embedded store in DATA/cluster-store.", HelpName = "SPEC" };
        var node = new Option<string?>("--node") { Description = "This node's name, kept across restarts. Default: the host name.", HelpName = "NAME" };
        var zone = new Option<string>("--zone") { Description = "Failure domain: the zone this node is in.", DefaultValueFactory = _ => "default", HelpName = "ZONE" };
        var rack = new Option<string>("--rack") { Description = "Failure domain: the rack this node is in.", DefaultValueFactory = _ => "default", HelpName = "RACK" };
        var leaseTtl = new Option<double>("--lease-ttl") { Description = "Seconds a node's heartbeat (and the controller's leadership) outlives its last keep-alive.", DefaultValueFactory = _ => 4, HelpName = "SECONDS" };
        var replaceAfter = new Option<double>("--replace-after") { Description = "Seconds a replica's node may stay Down before its replica is rebuilt on another node (a node back sooner is resynced from what changed).", DefaultValueFactory = _ => 300, HelpName = "SECONDS" };
        var scrubInterval = new Option<string?>("--scrub-interval") { Description = "Scrub every volume and its snapshots this often in the background, e.g. 7d (default: off).", HelpName = "DURATION" };
        var scrubRate = new Option<string?>("--scrub-rate") { Description = "Bytes per second a scheduled scrub reads at most (default 50MiB).", HelpName = "SIZE" };
        var ioThreads = new Option<int>("--io-threads") { Description = "Threads that serve every NBD and replica connection (default: one per core).", DefaultValueFactory = _ => 0, HelpName = "N" };
        var root = new RootCommand("cairnd: the Cairn storage daemon. Serves volumes over NBD and the control API over HTTP.")
        {
            dataDir, pools, nbdListen, iscsiListen, replicaListen, apiListen, advertise, cluster, node, zone, rack, leaseTtl, replaceAfter, scrubInterval, scrubRate, ioThreads,
        };

        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            await stderr.WriteLineAsync($"cairnd: {parsed.Errors[0].Message} (see cairnd --help)");
            return 1;
        }
        root.SetAction(async (result, cancellationToken) =>
        {
            DaemonOptions options;
            try
            {
                options = new DaemonOptions
                {
                    DataDirectory = result.GetValue(dataDir)!,
                    Pools = [.. (result.GetValue(pools) ?? []).Select(ParsePool)],
                    NbdListen = ParseEndpoint(result.GetValue(nbdListen)!),
                    IscsiListen = ParseEndpoint(result.GetValue(iscsiListen)!, "--iscsi-listen", 3260),
                    ReplicaListen = result.GetValue(replicaListen) is { } replica ? ParseEndpoint(replica, "--replica-listen", 10810) : null,
                    ApiListen = ParseApiUrl(result.GetValue(apiListen)!),
                    AdvertiseHost = result.GetValue(advertise),
                    Cluster = ParseCluster(result.GetValue(cluster)),
                    NodeName = ParseName("--node", result.GetValue(node)),
                    Zone = ParseName("--zone", result.GetValue(zone))!,
                    Rack = ParseName("--rack", result.GetValue(rack))!,
                    LeaseTtl = ParseLeaseTtl(result.GetValue(leaseTtl)),
                    ReplaceAfter = ParseReplaceAfter(result.GetValue(replaceAfter)),
                    ScrubInterval = ScrubScheduler.ParseInterval(result.GetValue(scrubInterval)),
                    ScrubBytesPerSecond = ScrubScheduler.ParseRate(result.GetValue(scrubRate)),
                    Announce = stdout,
                };
            }
            catch (FormatException e)
            {
                await stderr.WriteLineAsync($"cairnd: {e.Message}");
                return 1;
            }
            int threads = result.GetValue(ioThreads);
            if (threads is < 0 or > 1024)
            {
                await stderr.WriteLineAsync($"cairnd: --io-threads must be from 1 to 1024 (or 0 for one per core), not {threads}");
                return 1;
            }
            IoThreads.Configure(threads);
            return await ServeAsync(options, stderr, cancellationToken);
        });
        return await parsed.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr }, cancellationToken);
    }

    private static async Task<int> ServeAsync(DaemonOptions options, TextWriter stderr, CancellationToken cancellationToken)
    {
        CairnDaemon daemon;
        try
        {
            daemon = await CairnDaemon.StartAsync(options, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            await stderr.WriteLineAsync($"cairnd: could not start: {e.Message}");
            return 1;
        }
        await using (daemon)
        {
            await daemon.WaitForShutdownAsync(cancellationToken);
        }
        return 0;
    }

    /// <summary>"PATH" or "PATH:SIZE"; the size is what follows the last colon, if it reads as a size.</summary>
    internal static PoolConfig ParsePool(string text)
    {
        int colon = text.LastIndexOf(':');
        if (colon <= 0)
        {
            return new PoolConfig(text);
        }
        string path = text[..colon];
        string size = text[(colon + 1)..];
        return ByteSize.TryParse(size, out long bytes, out string error)
            ? new PoolConfig(path, bytes)
            : throw new FormatException($"--pool '{text}': {error}");
    }

    internal static IPEndPoint ParseEndpoint(string text, string option = "--nbd-listen", int examplePort = 10809) =>
        IPEndPoint.TryParse(text, out var endpoint) && text.Contains(':', StringComparison.Ordinal)
            ? endpoint
            : throw new FormatException($"{option} '{text}' is not ADDR:PORT, e.g. 127.0.0.1:{examplePort} or [::]:{examplePort}");

    internal static TimeSpan ParseReplaceAfter(double seconds) =>
        seconds is >= 0 and <= 30 * 24 * 3600
            ? TimeSpan.FromSeconds(seconds)
            : throw new FormatException($"--replace-after {seconds} is not between 0 and 2592000 seconds (30 days)");

    /// <summary>Only etcd:// is a cluster; a directory store is chosen with --data-dir, so anything else is a typo.</summary>
    internal static string? ParseCluster(string? text)
    {
        if (text is null)
        {
            return null;
        }
        if (!ClusterStoreFactory.IsEtcd(text))
        {
            throw new FormatException($"--cluster '{text}' is not etcd://HOST:PORT[,HOST:PORT...]; leave it out to run a single node on the embedded store");
        }
        ClusterStoreFactory.ParseEtcdEndpoints(text);
        return text;
    }

    /// <summary>Node, zone and rack names follow the volume-name rules: they end up in keys, URLs and tables.</summary>
    internal static string? ParseName(string flag, string? text)
    {
        if (text is null)
        {
            return null;
        }
        return VolumeNames.TryValidate(text, flag[2..] + " name", out string error) ? text : throw new FormatException($"{flag} '{text}': {error}");
    }

    internal static TimeSpan ParseLeaseTtl(double seconds) =>
        seconds is >= 1 and <= 300 && double.IsFinite(seconds)
            ? TimeSpan.FromSeconds(seconds)
            : throw new FormatException($"--lease-ttl {seconds} is out of range; give 1 to 300 seconds");

    internal static string ParseApiUrl(string text) =>
        Uri.TryCreate(text, UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttp
            ? text
            : throw new FormatException($"--api-listen '{text}' is not an http:// URL, e.g. http://127.0.0.1:9410");
}

using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.ControlPlane;
using Cairn.ControlPlane.Placement;

namespace Cairn.Benchmarks;

/// <summary>
/// The control plane at cluster scale, on paper made real: N simulated nodes (registrations and heartbeat records as
/// real nodes write them) and V volumes created one by one through the same path as the API — placement on the watched
/// <see cref="ClusterView"/>, then a spec put — in a real embedded cluster store (on tmpfs, so fsync costs what RAM
/// costs, not what this shared disk costs). It reports placement latency percentiles, the keys the store ends with,
/// the watch events one heartbeat round and one volume create cause, and the controller's full pass and node-failure
/// pass. Nothing here talks to a network: nodes are records, which is what the control plane sees of them.
/// </summary>
public static class ScaleSimulation
{
    private static readonly string[] Zones = ["zone-a", "zone-b", "zone-c"];

    public static async Task<int> RunAsync(string[] args)
    {
        int nodes = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1000;
        int volumes = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 100_000;
        TimeSpan leaseTtl = TimeSpan.FromSeconds(5);
        string dir = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "cairn-scale-" + Guid.NewGuid().ToString("N"));
        var options = new EmbeddedClusterStoreOptions { CompactLogBytes = 256 << 20, WatchHistoryEvents = 1_000_000 };
        await using var store = EmbeddedClusterStore.Open(dir, options);
        try
        {
            Console.WriteLine($"scale simulation: {nodes} nodes in {Zones.Length} zones x 20 racks, {volumes} volumes (1-100 GiB, 1 replica; 3-replica zone-spread placements timed too), embedded store on {Path.GetDirectoryName(dir)}");
            var events = new WatchCounter(store);
            await RegisterNodesAsync(store, nodes);
            await using var view = new ClusterView(store);
            await view.StartAsync();
            using var stopWatching = new CancellationTokenSource();
            events.Start(stopWatching.Token);

            long before = events.Count;
            await HeartbeatRoundAsync(store, nodes);
            await events.SettleAsync(store);
            long heartbeatEvents = events.Count - before;

            var (single, triple) = await CreateVolumesAsync(store, view, volumes);
            await events.SettleAsync(store);
            long createEvents = events.Count - before - heartbeatEvents;

            var leader = await store.PutAsync(ClusterKeys.ControllerLeader, JsonSerializer.SerializeToUtf8Bytes(new { node = "node-0000" }));
            var controller = new Controller("node-0000", store, view, () => leader);
            var clock = Stopwatch.StartNew();
            int firstPass = await controller.ReconcileAsync();
            var firstPassTime = clock.Elapsed;
            await store.DeleteAsync(ClusterKeys.Node("node-0007")); // its lease expired: Down
            await view.WaitForRevisionAsync(store.Revision, TimeSpan.FromMinutes(1));
            clock.Restart();
            int failurePass = await controller.ReconcileAsync();
            var failurePassTime = clock.Elapsed;

            var keys = (await store.RangeAsync("/cairn/")).Items.GroupBy(kv => kv.Key[..(kv.Key.IndexOf('/', "/cairn/".Length) + 1)]).ToDictionary(g => g.Key, g => g.Count());
            double roundsPerMinute = 60 / (leaseTtl.TotalSeconds / 3);
            Print(nodes, volumes, single, triple, keys, heartbeatEvents, roundsPerMinute, createEvents, firstPass, firstPassTime, failurePass, failurePassTime);
            await stopWatching.CancelAsync();
            return 0;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static NodePool Pool(int i) => new("nvme", 8L << 40, (i % 10) << 30, (8L << 40) - ((i % 10) << 30));

    private static async Task RegisterNodesAsync(IClusterStore store, int nodes)
    {
        var now = DateTimeOffset.UtcNow;
        for (int i = 0; i < nodes; i++)
        {
            string name = $"node-{i:D4}";
            string zone = Zones[i % Zones.Length];
            string rack = $"rack-{i / Zones.Length % 20:D2}";
            var registration = new NodeRegistration(name, $"http://10.0.{i / 250}.{i % 250}:9410", null, zone, rack, [Pool(i)], now, now, false);
            await store.PutAsync(ClusterKeys.Registration(name), JsonSerializer.SerializeToUtf8Bytes(registration));
            await store.PutAsync(ClusterKeys.Node(name), JsonSerializer.SerializeToUtf8Bytes(Live(name, zone, rack, i, now)));
        }
    }

    private static NodeRecord Live(string name, string zone, string rack, int i, DateTimeOffset now) =>
        new(name, $"http://10.0.{i / 250}.{i % 250}:9410", null, zone, rack, [Pool(i)], now, now);

    /// <summary>Every node rewrites its record once, as each does every TTL/3.</summary>
    private static async Task HeartbeatRoundAsync(IClusterStore store, int nodes)
    {
        var now = DateTimeOffset.UtcNow;
        for (int i = 0; i < nodes; i++)
        {
            string name = $"node-{i:D4}";
            await store.PutAsync(ClusterKeys.Node(name), JsonSerializer.SerializeToUtf8Bytes(Live(name, Zones[i % Zones.Length], $"rack-{i / Zones.Length % 20:D2}", i, now)));
        }
    }

    private static async Task<(List<double> Single, List<double> Triple)> CreateVolumesAsync(IClusterStore store, ClusterView view, int volumes)
    {
        var single = new List<double>(volumes);
        var triple = new List<double>(volumes / 100 + 1);
        var random = new Random(42);
        var clock = new Stopwatch();
        for (int v = 0; v < volumes; v++)
        {
            string name = $"vol-{v:D6}";
            long size = (long)random.Next(1, 101) << 30;
            clock.Restart();
            var decision = Placer.Place(new PlacementRequest(name, size, PlacementPolicy.Default), view.PlacementCandidates()).ThrowIfFailed();
            single.Add(clock.Elapsed.TotalMilliseconds);
            if (v % 100 == 0)
            {
                clock.Restart();
                Placer.Place(new PlacementRequest(name, size, new PlacementPolicy(3, SpreadLevel.Zone)), view.PlacementCandidates()).ThrowIfFailed();
                triple.Add(clock.Elapsed.TotalMilliseconds);
            }
            var target = decision.Replicas[0];
            var spec = new VolumeSpec(name, Guid.NewGuid().ToString("N"), size, target.Pool, DateTimeOffset.UtcNow, target.Node, PlacementPolicy.Default);
            long revision = await store.PutAsync(ClusterKeys.Volumes + name, JsonSerializer.SerializeToUtf8Bytes(spec));
            await view.WaitForRevisionAsync(revision, TimeSpan.FromMinutes(1)); // as the API does: the next placement sees this one
            if ((v + 1) % 20_000 == 0)
            {
                Console.WriteLine($"  {v + 1} volumes placed");
            }
        }
        return (single, triple);
    }

    private static void Print(int nodes, int volumes, List<double> single, List<double> triple, Dictionary<string, int> keys, long heartbeatEvents,
        double roundsPerMinute, long createEvents, int firstPass, TimeSpan firstPassTime, int failurePass, TimeSpan failurePassTime)
    {
        static string P(List<double> xs, double q)
        {
            var sorted = xs.Order().ToList();
            return sorted[Math.Min(sorted.Count - 1, (int)(q * sorted.Count))].ToString("F3", CultureInfo.InvariantCulture);
        }
        Console.WriteLine();
        Console.WriteLine($"placement, 1 replica        p50 {P(single, 0.50)} ms   p99 {P(single, 0.99)} ms   ({single.Count} placements over {nodes} nodes)");
        Console.WriteLine($"placement, 3 replicas/zone  p50 {P(triple, 0.50)} ms   p99 {P(triple, 0.99)} ms   ({triple.Count} placements)");
        Console.WriteLine($"cluster-store keys          {keys.Values.Sum()} total: {string.Join(", ", keys.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => $"{k.Key} {k.Value}"))}");
        Console.WriteLine($"watch events, heartbeats    {heartbeatEvents} per round x {roundsPerMinute:F0} rounds/min (lease 5 s) = {heartbeatEvents * roundsPerMinute:F0} per minute, to every watcher of /cairn/");
        Console.WriteLine($"watch events, creates       {createEvents} for {volumes} creates ({(double)createEvents / volumes:F1} per create)");
        Console.WriteLine($"controller, first pass      {firstPass} health writes in {firstPassTime.TotalSeconds:F2} s");
        Console.WriteLine($"controller, one node Down   {failurePass} health writes in {failurePassTime.TotalMilliseconds:F0} ms");
    }

    /// <summary>Counts the events a watcher of /cairn/ receives, as every node's view does.</summary>
    private sealed class WatchCounter(IClusterStore store)
    {
        private long _count;
        private long _lastRevision;

        public long Count => Interlocked.Read(ref _count);

        public void Start(CancellationToken stop)
        {
            long from = store.Revision + 1; // taken now: every change after Start is counted
            _ = CountAsync(from, stop);
        }

        private Task CountAsync(long from, CancellationToken stop) => Task.Run(async () =>
        {
            try
            {
                await foreach (var e in store.WatchAsync("/cairn/", from, stop))
                {
                    Interlocked.Increment(ref _count);
                    Interlocked.Exchange(ref _lastRevision, e.Revision);
                }
            }
            catch (OperationCanceledException)
            {
            }
        }, CancellationToken.None);

        /// <summary>Waits until the counter has seen every change made so far.</summary>
        public async Task SettleAsync(IClusterStore s)
        {
            long target = s.Revision;
            while (Interlocked.Read(ref _lastRevision) < target)
            {
                await Task.Delay(10);
            }
        }
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>
/// Synchronous replication across a real etcd and three real cairnd processes with a 2 s lease: a volume with three
/// replicas keeps every acknowledged write when a replica's node and then the owner's node are killed with SIGKILL,
/// the controller promotes an in-sync replica, and clients find the new owner through the API of any node.
/// </summary>
public sealed class ReplicationProcessTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int LeaseTtlSeconds = 2;
    private const int ReplaceAfterSeconds = 4; // with three nodes and three replicas there is nowhere to replace one: only the test that adds a node sees it
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(40); // generous: a loaded 2-core machine
    private static readonly string[] Names = ["n1", "n2", "n3"];

    private EtcdServer _etcd = null!;
    private readonly Dictionary<string, CairnDaemon> _nodes = new(StringComparer.Ordinal);
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(60) };

    public async ValueTask InitializeAsync()
    {
        _etcd = await EtcdServer.StartAsync();
        foreach (string name in Names)
        {
            await StartNodeAsync(name);
        }
    }

    // One IO thread per node, as under a CPU quota of one core or less: every owner's client connection then shares its
    // thread with its replica links and with the replica service (the fault runs keep one per core).
    private async Task StartNodeAsync(string name) =>
        _nodes[name] = await CairnDaemon.StartAsync(null, "--cluster", _etcd.Spec, "--node", name, "--zone", "z-" + name, "--io-threads", "1",
            "--lease-ttl", LeaseTtlSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--replace-after", ReplaceAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes.Values)
        {
            await node.DisposeAsync();
        }
        await _etcd.DisposeAsync();
        _http.Dispose();
    }

    private async Task<JsonElement> VolumeAsync(CairnDaemon via, string name) =>
        await _http.GetFromJsonAsync<JsonElement>($"{via.ApiUrl}/api/v1/volumes/{name}");

    private static Dictionary<string, string> ReplicaStates(JsonElement volume) =>
        volume.GetProperty("replicas").EnumerateArray().ToDictionary(r => r.GetProperty("node").GetString()!, r => r.GetProperty("state").GetString()!);

    private async Task<TimeSpan> WaitAsync(Func<Task<bool>> condition, string what)
    {
        try
        {
            return await Eventually.HoldsOverHttpAsync(condition, Deadline, what);
        }
        catch (TimeoutException)
        {
            foreach (var (name, node) in _nodes) // what each node said, to tell why
            {
                output.WriteLine($"--- log of {name} ---\n{node.Log}");
            }
            throw;
        }
    }

    private static byte[] Pattern(int length, int seed) => [.. Enumerable.Range(0, length).Select(i => (byte)((i * 31) ^ seed))];

    [Fact]
    public async Task Three_replicas_survive_a_killed_replica_then_a_killed_owner_without_losing_an_acknowledged_write()
    {
        var created = await _http.PostAsJsonAsync(_nodes["n1"].ApiUrl + "/api/v1/volumes", new { name = "db", size = "64MiB", replicas = 3, spread = "zone" });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        var volume = await VolumeAsync(_nodes["n1"], "db");
        string owner = volume.GetProperty("node").GetString()!;
        Assert.Equal(["InSync", "InSync", "InSync"], ReplicaStates(volume).Values);
        ulong epoch = volume.GetProperty("epoch").GetUInt64();
        output.WriteLine($"created on owner {owner} at epoch {epoch}");

        // Acknowledged writes, deliberately not flushed: the replicas' copies alone must keep them.
        var first = Pattern(256 * 1024, 1);
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "db"))
        {
            client.Write(1 << 20, first);
        }

        // A replica's node dies: the next write drops it from the in-sync set (epoch bump) and is still acknowledged.
        string replica = Names.First(n => n != owner);
        _nodes[replica].KillHard();
        var second = Pattern(64 * 1024, 2);
        var clock = Stopwatch.StartNew();
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "db"))
        {
            client.Write(8 << 20, second);
        }
        output.WriteLine($"write with a dead replica acknowledged after {clock.ElapsedMilliseconds} ms");
        await WaitAsync(async () => ReplicaStates(volume = await VolumeAsync(_nodes[owner], "db"))[replica] == "Failed",
            "the owner reports the dead replica Failed");
        Assert.True(volume.GetProperty("epoch").GetUInt64() > epoch, "dropping a replica bumps the epoch");

        // The owner's node dies: the controller promotes the remaining in-sync replica.
        string survivor = Names.Single(n => n != owner && n != replica);
        _nodes[owner].KillHard();
        clock.Restart();
        await WaitAsync(async () => (await VolumeAsync(_nodes[survivor], "db")).GetProperty("node").GetString() == survivor,
            "the surviving in-sync replica becomes the owner");
        output.WriteLine($"failed over to {survivor} {clock.Elapsed.TotalSeconds:F1} s after SIGKILL of the owner");
        volume = await VolumeAsync(_nodes[survivor], "db");
        Assert.Equal("Failed", ReplicaStates(volume)[owner]);
        Assert.Equal(_nodes[survivor].NbdUri("db"), volume.GetProperty("export").GetString());

        await AssertReadsBackAsync(survivor, "db", (1 << 20, first), (8 << 20, second));
    }

    [Fact]
    public async Task A_replica_back_from_an_outage_is_resynced_from_what_changed_and_the_replica_count_changes_online()
    {
        var created = await _http.PostAsJsonAsync(_nodes["n2"].ApiUrl + "/api/v1/volumes", new { name = "logs", size = "64MiB", replicas = 3 });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        string owner = (await VolumeAsync(_nodes["n2"], "logs")).GetProperty("node").GetString()!;
        string away = Names.First(n => n != owner);
        var before = Pattern(128 * 1024, 3);
        var during = Pattern(64 * 1024, 4);
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "logs"))
        {
            client.Write(0, before);
            client.Flush(); // durable on every replica: only what follows is the resync's business
            _nodes[away].KillHard();
            client.Write(32 << 20, during); // drops the dead replica; its dirty map starts here
        }
        await _nodes[away].RestartAsync();
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "logs")).Values.All(s => s == "InSync"),
            "the returning replica is resynced and in sync again");
        await _nodes[owner].WaitForLogAsync($"rebuilding the replica on {away} (delta");
        // The owner's API reports what the resync moved: the regions written while the replica was away (issue 5: at most 2x).
        var resync = (await VolumeAsync(_nodes[owner], "logs")).GetProperty("replicas").EnumerateArray()
            .Single(r => r.GetProperty("node").GetString() == away).GetProperty("lastRebuild");
        Assert.Equal("delta", resync.GetProperty("kind").GetString());
        Assert.InRange(resync.GetProperty("dataBytes").GetInt64(), during.Length, 2L * during.Length);
        var shown = (await _nodes[owner].CliAsync("volume", "show", "logs")).EnsureSuccess();
        Assert.Contains(shown.Stdout.Split('\n'), line => line.Contains($"{away} pool", StringComparison.Ordinal)
            && line.Contains("InSync; last rebuild: delta, ", StringComparison.Ordinal));

        // Fewer copies: a surplus in-sync replica is retired; more: a new one is copied in full while IO goes on.
        var fewer = await _http.PatchAsJsonAsync($"{_nodes[away].ApiUrl}/api/v1/volumes/logs", new { replicas = 2 });
        Assert.True(fewer.IsSuccessStatusCode, await fewer.Content.ReadAsStringAsync());
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "logs")) is { Count: 2 } states && states.Values.All(s => s == "InSync"),
            "the volume is down to two in-sync replicas");
        var more = await _http.PatchAsJsonAsync($"{_nodes[owner].ApiUrl}/api/v1/volumes/logs", new { replicas = 3 });
        Assert.True(more.IsSuccessStatusCode, await more.Content.ReadAsStringAsync());
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "logs")) is { Count: 3 } states && states.Values.All(s => s == "InSync"),
            "a third replica is added, copied and in sync");

        // Every copy holds the data: fail over twice and read it from whichever replica ends up owning the volume.
        _nodes[owner].KillHard();
        string? next = null;
        await WaitAsync(async () => (next = (await VolumeAsync(_nodes[Names.First(n => n != owner)], "logs")).GetProperty("node").GetString()) != owner,
            "another in-sync replica takes over");
        await AssertReadsBackAsync(next!, "logs", (0, before), (32 << 20, during));
    }

    [Fact]
    public async Task Snapshots_reach_a_rebuilt_replica_a_revert_reaches_every_replica_and_both_survive_failover()
    {
        var created = await _http.PostAsJsonAsync(_nodes["n1"].ApiUrl + "/api/v1/volumes", new { name = "snap", size = "64MiB", replicas = 2 });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        var volume = await VolumeAsync(_nodes["n1"], "snap");
        string owner = volume.GetProperty("node").GetString()!;
        string original = ReplicaStates(volume).Keys.Single(n => n != owner);
        string added = Names.Single(n => n != owner && n != original);
        var monday = Pattern(64 * 1024, 5);
        var tuesday = Pattern(64 * 1024, 6);
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "snap"))
        {
            client.Write(4 << 20, monday);
        }
        var snapshot = await _http.PostAsJsonAsync($"{_nodes[owner].ApiUrl}/api/v1/volumes/snap/snapshots", new { name = "monday" });
        Assert.True(snapshot.StatusCode == HttpStatusCode.Created, await snapshot.Content.ReadAsStringAsync());
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "snap"))
        {
            client.Write(4 << 20, tuesday);
        }

        // A third replica is copied in full: the snapshot first, then the live volume.
        var more = await _http.PatchAsJsonAsync($"{_nodes[owner].ApiUrl}/api/v1/volumes/snap", new { replicas = 3 });
        Assert.True(more.IsSuccessStatusCode, await more.Content.ReadAsStringAsync());
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "snap")) is { Count: 3 } states && states.Values.All(s => s == "InSync"),
            $"the replica added on {added} is copied and in sync");

        // Revert: every replica reverts, and is in sync again after a resync of what changed since (nothing). The
        // revert takes the remotes out of the in-sync set (an epoch bump) first: a view still showing the epoch from
        // before it, all in sync, must not count.
        ulong before = (await VolumeAsync(_nodes[owner], "snap")).GetProperty("epoch").GetUInt64();
        var reverted = await _http.PostAsJsonAsync($"{_nodes[owner].ApiUrl}/api/v1/volumes/snap/revert", new { snapshot = "monday", force = true });
        Assert.True(reverted.IsSuccessStatusCode, await reverted.Content.ReadAsStringAsync());
        await WaitAsync(async () => await VolumeAsync(_nodes[owner], "snap") is var v && v.GetProperty("epoch").GetUInt64() > before
            && ReplicaStates(v).Values.All(s => s == "InSync"), "the reverted replicas are in sync again");

        // Only the added replica is left: it must hold the reverted data and the snapshot.
        _nodes[original].KillHard();
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "snap"))
        {
            client.Write(8 << 20, tuesday); // drops the dead replica
        }
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "snap"))[original] == "Failed", $"{original} is dropped");
        _nodes[owner].KillHard();
        await WaitAsync(async () => (await VolumeAsync(_nodes[added], "snap")).GetProperty("node").GetString() == added,
            $"the rebuilt replica on {added} takes over");

        var snapshots = await _http.GetFromJsonAsync<JsonElement>($"{_nodes[added].ApiUrl}/api/v1/volumes/snap/snapshots");
        Assert.Equal(["monday"], snapshots.GetProperty("snapshots").EnumerateArray().Select(s => s.GetProperty("name").GetString()));
        await AssertReadsBackAsync(added, "snap", (4 << 20, monday), (8 << 20, tuesday)); // reverted, and written since
        await AssertReadsBackAsync(added, "snap@monday", (4 << 20, monday));
    }

    [Fact]
    public async Task A_replica_that_dropped_out_before_a_failover_is_resynced_by_the_new_owner_from_what_it_recorded()
    {
        var created = await _http.PostAsJsonAsync(_nodes["n3"].ApiUrl + "/api/v1/volumes", new { name = "hist", size = "64MiB", replicas = 3 });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        string owner = (await VolumeAsync(_nodes["n3"], "hist")).GetProperty("node").GetString()!;
        string away = Names.First(n => n != owner);
        string successor = Names.Single(n => n != owner && n != away);
        var before = Pattern(128 * 1024, 7);
        var during = Pattern(64 * 1024, 8);
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "hist"))
        {
            client.Write(0, before);
            _nodes[away].KillHard();
            client.Write(32 << 20, during); // drops the dead replica
        }
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "hist"))[away] == "Failed", $"{away} is dropped");

        // The owner dies before the replica returns: the promoted one resyncs it from what it received meanwhile.
        _nodes[owner].KillHard();
        await WaitAsync(async () => (await VolumeAsync(_nodes[successor], "hist")).GetProperty("node").GetString() == successor,
            $"{successor} takes over");
        await _nodes[away].RestartAsync();
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[successor], "hist"))[away] == "InSync",
            $"the returning replica on {away} is resynced by the new owner");
        await _nodes[successor].WaitForLogAsync($"rebuilding the replica on {away} (delta");

        // It holds every write: make it the owner and read them back.
        _nodes[successor].KillHard();
        await WaitAsync(async () => (await VolumeAsync(_nodes[away], "hist")).GetProperty("node").GetString() == away, $"{away} takes over");
        await AssertReadsBackAsync(away, "hist", (0, before), (32 << 20, during));
    }

    [Fact]
    public async Task A_replica_whose_node_stays_down_is_replaced_on_another_zone_and_copied_while_io_goes_on()
    {
        await StartNodeAsync("n4");
        var created = await _http.PostAsJsonAsync(_nodes["n1"].ApiUrl + "/api/v1/volumes", new { name = "rep", size = "64MiB", replicas = 3, spread = "zone" });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        var volume = await VolumeAsync(_nodes["n1"], "rep");
        string owner = volume.GetProperty("node").GetString()!;
        var members = ReplicaStates(volume).Keys.ToList();
        string victim = members.First(n => n != owner);
        string other = members.Single(n => n != owner && n != victim);
        string spare = _nodes.Keys.Single(n => !members.Contains(n));
        var before = Pattern(128 * 1024, 9);
        var during = Pattern(64 * 1024, 10);
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "rep"))
        {
            client.Write(0, before);
            _nodes[victim].KillHard();
            client.Write(16 << 20, during); // drops it; it stays down past --replace-after
        }

        await WaitAsync(async () => ReplicaStates(volume = await VolumeAsync(_nodes[owner], "rep")) is var states
                && !states.ContainsKey(victim) && states.GetValueOrDefault(spare) == "InSync" && states.Values.All(s => s == "InSync"),
            $"the replica on {victim} is replaced by one on {spare}, copied and in sync");
        await WaitAsync(async () => (await VolumeAsync(_nodes[owner], "rep")).GetProperty("health").GetProperty("state").GetString() == "Healthy",
            "the controller judges the volume Healthy again");

        // The new replica holds everything: leave it as the only one in sync and read through it.
        _nodes[other].KillHard();
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "rep"))
        {
            client.Write(32 << 20, during); // drops the other replica
        }
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "rep"))[other] == "Failed", $"{other} is dropped");
        _nodes[owner].KillHard();
        await WaitAsync(async () => (await VolumeAsync(_nodes[spare], "rep")).GetProperty("node").GetString() == spare, $"{spare} takes over");
        await AssertReadsBackAsync(spare, "rep", (0, before), (16 << 20, during), (32 << 20, during));
    }

    /// <summary>Reads each range through <paramref name="node"/>'s NBD export of <paramref name="export"/> and checks it holds what was written.</summary>
    private async Task AssertReadsBackAsync(string node, string export, params (long Offset, byte[] Data)[] written)
    {
        using var reader = await MiniNbdClient.ConnectAsync(_nodes[node].NbdPort, export);
        foreach (var (offset, data) in written)
        {
            var read = new byte[data.Length];
            reader.Read(offset, read);
            Assert.True(data.AsSpan().SequenceEqual(read), $"{export} on {node} reads back wrong at byte {offset}");
        }
    }
}

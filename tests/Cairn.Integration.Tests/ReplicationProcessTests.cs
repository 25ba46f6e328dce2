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
            _nodes[name] = await CairnDaemon.StartAsync(null, "--cluster", _etcd.Spec, "--node", name, "--zone", "z-" + name,
                "--lease-ttl", LeaseTtlSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

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

    private static Task<TimeSpan> WaitAsync(Func<Task<bool>> condition, string what) =>
        Eventually.HoldsOverHttpAsync(condition, Deadline, what);

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

        using var reader = await MiniNbdClient.ConnectAsync(_nodes[survivor].NbdPort, "db");
        var read = new byte[first.Length];
        reader.Read(1 << 20, read);
        Assert.Equal(first, read);
        read = new byte[second.Length];
        reader.Read(8 << 20, read);
        Assert.Equal(second, read);
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
            _nodes[away].KillHard();
            client.Write(32 << 20, during); // drops the dead replica; its dirty map starts here
        }
        await _nodes[away].RestartAsync();
        await WaitAsync(async () => ReplicaStates(await VolumeAsync(_nodes[owner], "logs")).Values.All(s => s == "InSync"),
            "the returning replica is resynced and in sync again");
        Assert.Contains($"rebuilding the replica on {away} (delta", _nodes[owner].Log, StringComparison.Ordinal);
        // The owner's API reports what the resync moved: the regions written while the replica was away (issue 5: at most 2x).
        var resync = (await VolumeAsync(_nodes[owner], "logs")).GetProperty("replicas").EnumerateArray()
            .Single(r => r.GetProperty("node").GetString() == away).GetProperty("lastRebuild");
        Assert.Equal("delta", resync.GetProperty("kind").GetString());
        Assert.InRange(resync.GetProperty("dataBytes").GetInt64(), during.Length, 2L * during.Length);

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
        using var reader = await MiniNbdClient.ConnectAsync(_nodes[next!].NbdPort, "logs");
        var read = new byte[before.Length];
        reader.Read(0, read);
        Assert.Equal(before, read);
        read = new byte[during.Length];
        reader.Read(32 << 20, read);
        Assert.Equal(during, read);
    }
}

using System.Text;
using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.Replication;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// The controller's failover over a real embedded store and real node memberships, whose records carry each run's
/// boot: a replica whose node restarted since it joined the in-sync set is never promoted (it may have lost
/// acknowledged writes from its cache), an owner that restarted is replaced, a failover whose new owner never served
/// is undone, and replica-count repairs wait until a failover is taken up.
/// </summary>
public sealed class ControllerReplicationTests : IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30); // generous: a loaded 2-core machine
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-ctlrep-" + Guid.NewGuid().ToString("N"));
    private readonly Dictionary<string, NodeMembership> _nodes = new(StringComparer.Ordinal);
    private readonly List<NodeMembership> _stopped = [];
    private EmbeddedClusterStore _store = null!;
    private ClusterView _view = null!;
    private long _term;

    public async ValueTask InitializeAsync()
    {
        _store = EmbeddedClusterStore.Open(_dir);
        _view = new ClusterView(_store);
        await _view.StartAsync();
        _term = await _store.PutAsync(ClusterKeys.ControllerLeader, JsonSerializer.SerializeToUtf8Bytes(new LeaderRecord("n1", DateTimeOffset.UtcNow), ClusterJson.Default.LeaderRecord));
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var member in _nodes.Values.Concat(_stopped))
        {
            await member.DisposeAsync();
        }
        await _view.DisposeAsync();
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private Controller NewController() => new("n1", _store, _view, () => _term) { ReplaceAfter = TimeSpan.Zero };

    /// <summary>Starts a node: a new run of its daemon, hence a new boot.</summary>
    private async Task<NodeMembership> StartAsync(string name)
    {
        var member = new NodeMembership(_store, new NodeIdentity(name), () => [new NodePool("p", 100L << 30, 0, 100L << 30)],
            options: new MembershipOptions { LeaseTtl = TimeSpan.FromSeconds(10) });
        await member.StartAsync();
        _nodes[name] = member;
        return member;
    }

    /// <summary>Stops a node cleanly: it shows Down at once.</summary>
    private async Task StopAsync(string name)
    {
        var member = _nodes[name];
        _nodes.Remove(name);
        await member.DisposeAsync();
        _stopped.Add(member);
    }

    private async Task RestartAsync(string name)
    {
        string before = _nodes[name].Boot;
        await StopAsync(name);
        Assert.NotEqual(before, (await StartAsync(name)).Boot);
    }

    private string? BootOf(string node) => _nodes.TryGetValue(node, out var member) ? member.Boot : null;

    private async Task PutAsync(string volume, ReplicaSet set, int replicas = 3) =>
        await _store.PutAsync(ClusterKeys.Volumes + volume, JsonSerializer.SerializeToUtf8Bytes(
            new VolumeSpec(volume, "id-" + volume, 1L << 30, "p", DateTimeOffset.UtcNow, set.Owner, new Placement.PlacementPolicy(replicas)).WithReplication(set),
            ControlPlaneJson.Default.VolumeSpec));

    private async Task<ReplicaSet> StoredAsync(string volume)
    {
        var kv = await _store.GetAsync(ClusterKeys.Volumes + volume);
        Assert.NotNull(kv);
        return JsonSerializer.Deserialize(kv.Value, ControlPlaneJson.Default.VolumeSpec)!.Replication!;
    }

    /// <summary>Lets the view apply everything written so far (node records going and coming included), then runs one pass.</summary>
    private async Task<int> PassAsync(Controller controller)
    {
        Assert.True(await _view.WaitForRevisionAsync(_store.Revision, Deadline));
        return await controller.ReconcileAsync();
    }

    private async Task<VolumeHealth?> HealthAsync(string volume) =>
        await _store.GetAsync(ClusterKeys.Health(volume)) is { } kv ? JsonSerializer.Deserialize(kv.Value, ClusterJson.Default.VolumeHealth) : null;

    [Fact]
    public async Task A_node_keeps_its_boot_when_its_lease_is_lost_and_gets_a_new_one_when_it_restarts()
    {
        var n1 = await StartAsync("n1");
        string boot = n1.Boot;
        Assert.True(await _view.WaitUntilAsync(() => _view.LiveBoots().GetValueOrDefault("n1") == boot, Deadline));

        long lease = n1.LeaseId;
        Assert.True(await _store.RevokeLeaseAsync(lease)); // the store lost it during an outage; the process lives on
        await Eventually.HoldsAsync(() => n1.LeaseId != 0 && n1.LeaseId != lease, Deadline, "n1 rejoins with a new lease");
        Assert.True(await _view.WaitForRevisionAsync(_store.Revision, Deadline));
        Assert.Equal(boot, _view.LiveBoots()["n1"]); // same run, same cache: the same boot

        await RestartAsync("n1");
        Assert.True(await _view.WaitUntilAsync(() => _view.LiveBoots().GetValueOrDefault("n1") is { } now && now != boot, Deadline));
    }

    [Fact]
    public async Task A_replica_whose_node_restarted_is_never_promoted_and_is_marked_failed()
    {
        foreach (string name in new[] { "n1", "n2", "n3" })
        {
            await StartAsync(name);
        }
        await PutAsync("v", ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")], BootOf));
        await RestartAsync("n2"); // lost what was in its cache, but still listed in sync: its owner never wrote to it since
        await StopAsync("n1");

        await PassAsync(NewController());

        var set = await StoredAsync("v");
        Assert.Equal(("n3", 2UL), (set.Owner, set.Epoch));
        Assert.Equal(ReplicaState.Failed, set.Find("n1")!.State);
        Assert.Equal(ReplicaState.Failed, set.Find("n2")!.State);
        Assert.Contains("restarted", set.Find("n2")!.Reason, StringComparison.Ordinal);
        Assert.NotNull(set.LastServed); // n3 has not served yet
    }

    [Fact]
    public async Task With_only_a_restarted_replica_up_the_volume_waits_for_its_owner()
    {
        await StartAsync("n1");
        await StartAsync("n2");
        await PutAsync("v", ReplicaSet.Create([("n1", "p"), ("n2", "p")], BootOf), replicas: 2);
        await RestartAsync("n2");
        await StopAsync("n1"); // Down: it may only be cut off, with every acknowledged write n2 lost

        await PassAsync(NewController());

        var set = await StoredAsync("v");
        Assert.Equal(("n1", 1UL), (set.Owner, set.Epoch));
        Assert.Equal(ReplicaState.InSync, set.Find("n2")!.State);
        var health = await HealthAsync("v");
        Assert.Equal(VolumeHealthState.Unavailable, health?.State);
        Assert.Equal("its owner n1 is Down and no in-sync replica can take over", health?.Reason);
    }

    [Fact]
    public async Task An_owner_that_restarted_is_replaced_by_an_intact_replica_or_keeps_the_volume_when_it_was_the_only_copy()
    {
        foreach (string name in new[] { "n1", "n2", "n3" })
        {
            await StartAsync(name);
        }
        await PutAsync("v", ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")], BootOf));
        await PutAsync("solo", ReplicaSet.Create([("n1", "p")], BootOf), replicas: 1);
        await RestartAsync("n1"); // back before its lease ran out: never Down, but its copy may have lost writes

        await PassAsync(NewController());

        var set = await StoredAsync("v");
        Assert.Equal(("n2", 2UL), (set.Owner, set.Epoch));
        Assert.Equal(ReplicaState.Failed, set.Find("n1")!.State);
        var solo = await StoredAsync("solo");
        Assert.Equal(("n1", 2UL, BootOf("n1")), (solo.Owner, solo.Epoch, solo.Find("n1")!.Boot)); // restart in place, at its new boot
    }

    [Fact]
    public async Task A_failover_whose_new_owner_died_before_serving_goes_back_to_the_deposed_owner()
    {
        foreach (string name in new[] { "n1", "n2", "n3" })
        {
            await StartAsync(name);
        }
        var served = ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")], BootOf);
        // What the controller wrote when n1 was cut off from the store for a while: n2 promoted, n1 failed.
        var failedOver = served.FailOver(node => node == "n1" ? null : BootOf(node))!;
        await PutAsync("v", failedOver);
        await StopAsync("n2"); // before it ever served; n1 is back on the same boot

        await PassAsync(NewController());

        var set = await StoredAsync("v");
        Assert.Equal(("n1", failedOver.Epoch + 1), (set.Owner, set.Epoch));
        Assert.Equal(ReplicaState.InSync, set.Find("n1")!.State);
        Assert.True(served.SameAs(set.LastServed));
    }

    [Fact]
    public async Task Replicas_are_not_replaced_while_a_failover_is_not_taken_up_and_are_once_the_new_owner_serves()
    {
        foreach (string name in new[] { "n1", "n2", "n3", "n4" })
        {
            await StartAsync(name);
        }
        var served = ReplicaSet.Create([("n1", "p"), ("n2", "p"), ("n3", "p")], BootOf);
        await StopAsync("n1");
        var failedOver = served.FailOver(BootOf)!;
        await PutAsync("v", failedOver);
        var controller = NewController();

        await PassAsync(controller);
        Assert.True(failedOver.SameAs(await StoredAsync("v"))); // n1 holds the only record of how to undo it: kept

        await PutAsync("v", failedOver.MarkServed("n2", BootOf("n2")!)); // what n2 writes when it opens
        await PassAsync(controller);
        var set = await StoredAsync("v");
        Assert.False(set.Contains("n1"));
        Assert.Equal(ReplicaState.Failed, set.Find("n4")!.State); // added, to be copied by n2
    }

    [Fact]
    public async Task An_in_sync_replica_whose_node_restarted_makes_the_volume_degraded()
    {
        foreach (string name in new[] { "n1", "n2" })
        {
            await StartAsync(name);
        }
        await PutAsync("v", ReplicaSet.Create([("n1", "p"), ("n2", "p")], BootOf), replicas: 2);
        await RestartAsync("n2");

        await PassAsync(NewController());

        var health = await HealthAsync("v");
        Assert.Equal(VolumeHealthState.Degraded, health?.State);
        Assert.StartsWith("1 of 2 replicas in sync (n2 restarted, to be resynced)", health?.Reason, StringComparison.Ordinal);
        Assert.Equal(1UL, (await StoredAsync("v")).Epoch); // dropping it is its owner's call
    }

    [Fact]
    public void Specs_written_before_boots_were_recorded_still_read_and_their_boots_are_unknown()
    {
        string old = """
            {"name":"v","id":"abc","sizeBytes":1073741824,"pool":"p","createdAt":"2026-11-01T00:00:00+00:00","node":"n1",
             "replication":{"epoch":4,"owner":"n1","members":[
               {"node":"n1","pool":"p","state":"InSync","failedAtEpoch":0,"reason":null},
               {"node":"n2","pool":"p","state":"Failed","failedAtEpoch":3,"reason":"gone"}]}}
            """;
        var spec = JsonSerializer.Deserialize(Encoding.UTF8.GetBytes(old), ControlPlaneJson.Default.VolumeSpec)!;
        var set = spec.Replication!;
        Assert.Equal((4UL, "n1"), (set.Epoch, set.Owner));
        Assert.All(set.Members, m => Assert.Null(m.Boot));
        Assert.Null(set.LastServed);

        // And what this version adds goes into the store and comes back: boots, and the set that last served.
        var failedOver = ReplicaSet.Create([("n1", "p"), ("n2", "p")], n => n + ".1").FailOver(n => n == "n1" ? null : n + ".1")!;
        Assert.NotNull(failedOver.LastServed);
        var roundTripped = JsonSerializer.Deserialize(JsonSerializer.SerializeToUtf8Bytes(spec.WithReplication(failedOver), ControlPlaneJson.Default.VolumeSpec),
            ControlPlaneJson.Default.VolumeSpec)!.Replication!;
        Assert.True(failedOver.SameAs(roundTripped));
    }
}

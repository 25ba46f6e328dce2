using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.ControlPlane.Replication;
using Cairn.Replication;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// A node's side of failover safety, over a real embedded store and this node's real membership (its lease and boot):
/// a replica it hosts starts at the store's epoch, so a deposed owner's older one is refused; an owner from an earlier
/// boot does not serve its copy; an owner records that it serves before serving.
/// </summary>
public sealed class VolumeServiceReplicationTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-vsrep-" + Guid.NewGuid().ToString("N"));
    private readonly MemoryVolumePool _pool = new("p", 100L << 30);
    private EmbeddedClusterStore _store = null!;
    private NodeMembership _membership = null!;
    private VolumeService _service = null!;
    private Func<string, System.Net.EndPoint?> _replicaEndpointOf = _ => null; // no other node serves replicas unless a test starts one

    public async ValueTask InitializeAsync()
    {
        _store = EmbeddedClusterStore.Open(_dir);
        _membership = new NodeMembership(_store, new NodeIdentity("n1"), () => [new NodePool("p", 100L << 30, 0, 100L << 30)]);
        await _membership.StartAsync();
        _service = new VolumeService(_store, new PoolManager([_pool]), ownership: VolumeOwnership.Clustered("n1"));
        await _service.StartAsync();
        _service.EnableReplication(new ReplicationContext("n1", new ReplicaSetWriter(_store), _membership, node => _replicaEndpointOf(node),
            _membership.Boot, _ => null, (node, ct) => ClusterService.GetBootAsync(_store, node, ct))
        {
            ConnectWithin = TimeSpan.FromSeconds(20), // generous: a loaded 2-core machine
        });
    }

    public async ValueTask DisposeAsync()
    {
        await _service.DisposeAsync();
        await _membership.DisposeAsync();
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private static VolumeSpec Spec(string name, ReplicaSet set) =>
        new VolumeSpec(name, "id-" + name, 1L << 20, "p", DateTimeOffset.UtcNow, set.Owner).WithReplication(set);

    private async Task<VolumeSpec> PutAsync(VolumeSpec spec)
    {
        await _store.PutAsync(ClusterKeys.Volumes + spec.Name, JsonSerializer.SerializeToUtf8Bytes(spec, ControlPlaneJson.Default.VolumeSpec));
        return spec;
    }

    private async Task<ReplicaSet> StoredAsync(string name) =>
        JsonSerializer.Deserialize((await _store.GetAsync(ClusterKeys.Volumes + name))!.Value, ControlPlaneJson.Default.VolumeSpec)!.Replication!;

    [Fact]
    public async Task A_hosted_replica_starts_at_the_store_s_epoch_and_refuses_an_older_one()
    {
        var set = new ReplicaSet(7, "n9", [new("n9", "p", ReplicaState.InSync, Boot: "b9"), new("n1", "p", ReplicaState.InSync, Boot: "b1")]);
        var spec = await PutAsync(Spec("v", set));

        await _service.SyncWithClusterAsync([spec]);

        var target = _service.ReplicaCatalog.Find(spec.Id);
        Assert.NotNull(target);
        Assert.Equal(7UL, target.Epoch);
        Assert.False(target.TryAdmit(6)); // a deposed owner that has not noticed yet
        Assert.True(target.TryAdmit(7));
    }

    [Fact]
    public async Task An_owner_from_an_earlier_boot_waits_and_serves_once_the_volume_is_given_to_this_boot_recording_that_it_serves()
    {
        var earlier = ReplicaSet.Create([("n1", "p")], _ => "an earlier boot of n1");
        var spec = await PutAsync(Spec("v", earlier));

        await _service.SyncWithClusterAsync([spec]);
        Assert.False(_service.Owns("v")); // its copy may have lost acknowledged writes with the cache of that boot

        // The controller sees n1 restarted and, as it was the only copy, lets it keep the volume at its new boot.
        var restarted = earlier.FailOver(node => node == "n1" ? _membership.Boot : null);
        Assert.NotNull(restarted);
        Assert.NotNull(restarted.LastServed);
        spec = await PutAsync(spec.WithReplication(restarted));

        await _service.SyncWithClusterAsync([spec]);
        Assert.True(_service.Owns("v"));
        var stored = await StoredAsync("v");
        Assert.Null(stored.LastServed); // recorded before serving: the controller can no longer undo it
        Assert.Equal((restarted.Epoch, _membership.Boot), (stored.Epoch, stored.Find("n1")!.Boot));
    }

    /// <summary>
    /// n2 restarted within its lease (the controller saw no gap), so the set still lists it in sync at its earlier boot,
    /// and its new run hosts the replica again and answers. Opening, the owner reads n2's boot from the store and drops
    /// it before serving: it may lack writes it lost from its cache. A replica on the boot it joined at stays in sync.
    /// </summary>
    [Fact]
    public async Task Opening_an_owner_drops_a_replica_that_answers_from_a_later_boot_than_it_joined_at_and_keeps_one_that_does_not()
    {
        var n2 = new NodeMembership(_store, new NodeIdentity("n2"), () => [new NodePool("p", 100L << 30, 0, 100L << 30)]);
        await n2.StartAsync();
        await using var _ = n2;
        await using var n2Service = new VolumeService(_store, new PoolManager([new MemoryVolumePool("p", 100L << 30)]), ownership: VolumeOwnership.Clustered("n2"));
        await n2Service.StartAsync();
        n2Service.EnableReplication(new ReplicationContext("n2", new ReplicaSetWriter(_store), n2, _ => null, n2.Boot, _ => null,
            (node, ct) => ClusterService.GetBootAsync(_store, node, ct)));
        await using var n2Replicas = new ReplicaServer(n2Service.ReplicaCatalog, new Core.FrontendLog(_ => { }, _ => { }, (_, _) => { }));
        n2Replicas.Start(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        _replicaEndpointOf = node => node == "n2" ? n2Replicas.LocalEndpoint : null;

        var restarted = await PutAsync(Spec("restarted", ReplicaSet.Create([("n1", "p"), ("n2", "p")], node => node == "n1" ? _membership.Boot : "an earlier boot of n2")));
        var intact = await PutAsync(Spec("intact", ReplicaSet.Create([("n1", "p"), ("n2", "p")], node => node == "n1" ? _membership.Boot : n2.Boot)));
        await n2Service.SyncWithClusterAsync([restarted, intact]);
        await _service.SyncWithClusterAsync([restarted, intact]);

        Assert.True(_service.Owns("restarted"));
        var dropped = await StoredAsync("restarted");
        var member = dropped.Find("n2")!;
        // Dropped at epoch 1; the owner then rebuilds it (it is reachable), perhaps already admitted at its current boot.
        Assert.True(member.State == ReplicaState.InSync ? member.Boot == n2.Boot && dropped.Epoch >= 3 : member.FailedAtEpoch == 1 && dropped.Epoch == 2,
            $"n2 was trusted at the boot it left: {dropped.Epoch} {member}");
        Assert.Null(dropped.LastServed);
        Assert.True(_service.Owns("intact"));
        var kept = await StoredAsync("intact");
        Assert.Equal((1UL, ReplicaState.InSync), (kept.Epoch, kept.Find("n2")!.State));
    }

    [Fact]
    public async Task An_owner_whose_record_names_another_node_by_the_time_it_opens_does_not_serve()
    {
        // n1 was promoted, but by the time it opens, the store gave the volume back to n2 (which never left).
        var set = new ReplicaSet(3, "n1", [new("n1", "p", ReplicaState.InSync, Boot: _membership.Boot), new("n2", "p", ReplicaState.Failed, 2, Boot: "b2")]);
        var spec = Spec("v", set);
        await PutAsync(spec.WithReplication(set with { Epoch = 4, Owner = "n2", Members = [set.Members[0], set.Members[1] with { State = ReplicaState.InSync }] }));

        await _service.SyncWithClusterAsync([spec]); // this node's view is behind the store

        Assert.False(_service.Owns("v"));
        Assert.Equal("n2", (await StoredAsync("v")).Owner);
        Assert.DoesNotContain(_pool.ListVolumes(), v => v.Id == spec.Id); // the empty copy made for it is not left behind
    }

    /// <summary>
    /// Seen in the fault runs: an owner cut from the store rejoins, and its view still lists a volume deleted meanwhile
    /// (its data was deleted with it). Opening it creates an empty copy before the store says the volume is gone; that
    /// copy must not stay in the pool, where nothing would ever delete it.
    /// </summary>
    [Fact]
    public async Task A_stale_view_of_a_deleted_volume_leaves_no_data_in_the_pool()
    {
        var spec = Spec("gone", ReplicaSet.Create([("n1", "p")], _ => _membership.Boot)); // never stored: deleted before this view is acted on

        await _service.SyncWithClusterAsync([spec]);

        Assert.False(_service.Owns("gone"));
        Assert.DoesNotContain(_pool.ListVolumes(), v => v.Id == spec.Id);
    }

    [Fact]
    public async Task A_copy_that_existed_before_a_refused_takeover_is_kept()
    {
        // A replica's copy with data: the refusal says only that another node owns it, and the copy may be needed again.
        var set = new ReplicaSet(3, "n1", [new("n1", "p", ReplicaState.InSync, Boot: _membership.Boot), new("n2", "p", ReplicaState.InSync, Boot: "b2")]);
        var spec = Spec("kept", set);
        await PutAsync(spec.WithReplication(set with { Epoch = 4, Owner = "n2" }));
        _pool.CreateVolume(spec.Id, spec.SizeBytes);

        await _service.SyncWithClusterAsync([spec]);

        Assert.False(_service.Owns("kept"));
        Assert.Contains(_pool.ListVolumes(), v => v.Id == spec.Id);
    }
}

using System.Net;
using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.ControlPlane.Replication;
using Cairn.Core;
using Cairn.Replication;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// An owner whose node lost its lease and was granted a new one (cut off from the store, then back) may have been failed
/// over meanwhile while its own view still names it the owner; the fault runs caught such an owner serving reads and
/// taking a delete. Two nodes in one process over one embedded store: n1 owns volume v, n2 holds its replica behind a
/// real replica service; n1's lease is played by the test.
/// </summary>
public sealed class OwnerLeaseTests : IAsyncLifetime
{
    private const int Block = 4096;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-ownerlease-" + Guid.NewGuid().ToString("N"));
    private readonly TestLease _lease = new();
    private readonly MemoryVolumePool _pool1 = new("p1");
    private EmbeddedClusterStore _store = null!;
    private VolumeService _n1 = null!;
    private VolumeService _n2 = null!;
    private ReplicaServer _server = null!;
    private VolumeSpec _spec = null!;

    private sealed class TestLease : IOwnerLease
    {
        public bool IsHeld { get; set; } = true;
        public long Term { get; set; } = 1;
    }

    /// <summary>Every node runs its first boot throughout.</summary>
    private static string Boot(string node) => node + ".boot1";

    private static Task<string?> BootAsync(string node, CancellationToken cancellationToken) => Task.FromResult<string?>(Boot(node));

    public async ValueTask InitializeAsync()
    {
        _store = EmbeddedClusterStore.Open(_dir);
        _n2 = new VolumeService(_store, new PoolManager([new MemoryVolumePool("p2")]), ownership: VolumeOwnership.Clustered("n2"));
        await _n2.StartAsync();
        _n2.EnableReplication(new ReplicationContext("n2", new ReplicaSetWriter(_store), new TestLease(), _ => null, Boot("n2"), Boot, BootAsync));
        _server = new ReplicaServer(_n2.ReplicaCatalog, new FrontendLog(_ => { }, _ => { }, (_, _) => { }));
        _server.Start(new IPEndPoint(IPAddress.Loopback, 0));
        _n1 = new VolumeService(_store, new PoolManager([_pool1]), ownership: VolumeOwnership.Clustered("n1"));
        await _n1.StartAsync();
        _n1.EnableReplication(new ReplicationContext("n1", new ReplicaSetWriter(_store), _lease, node => node == "n2" ? _server.LocalEndpoint : null,
            Boot("n1"), Boot, BootAsync));

        _spec = new VolumeSpec("v", "id-v", 1L << 20, "p1", DateTimeOffset.UtcNow).WithReplication(ReplicaSet.Create([("n1", "p1"), ("n2", "p2")], Boot));
        await PutAsync(_spec);
        await _n2.SyncWithClusterAsync([_spec]);
        await _n1.SyncWithClusterAsync([_spec]);
        Assert.True(_n1.Owns("v"));
    }

    public async ValueTask DisposeAsync()
    {
        await _n1.DisposeAsync();
        await _server.DisposeAsync();
        await _n2.DisposeAsync();
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task PutAsync(VolumeSpec spec) =>
        await _store.PutAsync(ClusterKeys.Volumes + spec.Name, JsonSerializer.SerializeToUtf8Bytes(spec, ControlPlaneJson.Default.VolumeSpec));

    private static byte[] Pattern(byte value) => Enumerable.Repeat(value, Block).ToArray();

    [Fact]
    public async Task An_owner_whose_lease_was_granted_again_serves_nothing_until_the_store_still_names_it_the_owner()
    {
        using var session = _n1.TryOpen("v", "client")!;
        await session.Device.WriteAsync(0, Pattern(7), WriteFlags.None);

        _lease.IsHeld = false; // cut off from the store
        await Assert.ThrowsAsync<BlockDeviceException>(() => session.Device.ReadAsync(0, new byte[Block]).AsTask());
        _lease.IsHeld = true;
        _lease.Term = 2; // back, on a new grant: the view still names n1 the owner, but nothing proves it yet
        var refused = await Assert.ThrowsAsync<BlockDeviceException>(() => session.Device.ReadAsync(0, new byte[Block]).AsTask());
        Assert.Contains("can no longer prove its epoch", refused.Message, StringComparison.Ordinal);

        await _n1.SyncWithClusterAsync([_spec]); // reads the store: still the owner at epoch 1
        var read = new byte[Block];
        await session.Device.ReadAsync(0, read);
        Assert.Equal(Pattern(7), read);
        await session.Device.WriteAsync(Block, Pattern(8), WriteFlags.None);
    }

    [Fact]
    public async Task An_owner_failed_over_while_its_lease_was_lost_refuses_reads_and_a_delete_and_is_demoted_though_its_view_lags()
    {
        using var session = _n1.TryOpen("v", "client")!;
        await session.Device.WriteAsync(0, Pattern(7), WriteFlags.None);
        _lease.IsHeld = false;
        var failedOver = _spec.WithReplication(_spec.Replication!.FailOver(node => node == "n2" ? Boot(node) : null)!); // the controller, while n1 was Down
        await PutAsync(failedOver);
        _lease.IsHeld = true;
        _lease.Term = 2;

        await Assert.ThrowsAsync<BlockDeviceException>(() => session.Device.ReadAsync(0, new byte[Block]).AsTask());
        var delete = await Assert.ThrowsAsync<CairnException>(() => _n1.DeleteAsync("v", force: true));
        Assert.Equal(CairnErrorCode.Unavailable, delete.Code);
        Assert.Contains("owned by node n2 now (epoch 2)", delete.Message, StringComparison.Ordinal);
        Assert.NotNull(await _store.GetAsync(ClusterKeys.Volumes + "v")); // the new owner's volume is still there
        Assert.Contains(_pool1.ListVolumes(), v => v.Id == "id-v"); // and so is this node's copy

        await _n1.SyncWithClusterAsync([_spec]); // its view still shows the spec from before the failover
        Assert.False(_n1.Owns("v"));
        Assert.True(session.Revoked.IsCancellationRequested);

        // The view keeps lagging for a while: n1 must not open the volume again at the old epoch (n2's replica, not
        // reached by the new owner yet, would still take it), then follows the new set once its view shows it.
        await _n1.SyncWithClusterAsync([_spec]);
        Assert.False(_n1.Owns("v"));
        await _n1.SyncWithClusterAsync([failedOver]);
        Assert.False(_n1.Owns("v"));
        Assert.Contains("v", _n1.HostedReplicas());
    }
}

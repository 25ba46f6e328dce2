using Cairn.ClusterStore;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// Membership and controller election, run against the embedded store and against a real etcd. Each "node" gets its
/// own store client where the store allows it (etcd), as separate processes would.
/// </summary>
public abstract partial class ClusterContractTests : IAsyncLifetime
{
    private readonly List<IAsyncDisposable> _cleanup = [];

    /// <summary>Lease TTL for these tests: short, so expiry is quick.</summary>
    protected abstract TimeSpan Ttl { get; }

    protected abstract string StoreKind { get; }

    /// <summary>A client of the store under test; the caller does not dispose it.</summary>
    protected abstract Task<IClusterStore> ClientAsync();

    public virtual ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public virtual async ValueTask DisposeAsync()
    {
        for (int i = _cleanup.Count - 1; i >= 0; i--)
        {
            await _cleanup[i].DisposeAsync();
        }
        GC.SuppressFinalize(this);
    }

    private TimeSpan Deadline => 2 * Ttl + TimeSpan.FromSeconds(1);

    private async Task<NodeMembership> Join(string name, string zone = "z1", Func<IReadOnlyList<NodePool>>? pools = null)
    {
        var membership = new NodeMembership(await ClientAsync(), new NodeIdentity(name, zone, "r1"),
            pools ?? (() => [new NodePool("p", 100, 10, 90)]), $"http://{name}:9410", $"nbd://{name}:10809",
            new MembershipOptions { LeaseTtl = Ttl });
        _cleanup.Add(membership);
        await membership.StartAsync();
        return membership;
    }

    private async Task<ClusterService> Cluster() => new(await ClientAsync(), "observer", StoreKind);

    [Fact]
    public async Task A_node_lists_itself_Up_with_its_domains_addresses_and_pools()
    {
        await Join("n1");
        var cluster = await Cluster();

        var node = Assert.Single(await cluster.ListNodesAsync());
        Assert.Equal(("n1", NodeState.Up, false, "z1", "r1"), (node.Name, node.State, node.Draining, node.Zone, node.Rack));
        Assert.Equal(("http://n1:9410", "nbd://n1:10809"), (node.ApiAddress, node.NbdAddress));
        Assert.Equal(new NodePool("p", 100, 10, 90), Assert.Single(node.Pools));
        Assert.NotNull(node.LastHeartbeat);
        var one = await cluster.GetNodeAsync("n1");
        Assert.Equal((node.Name, node.State, node.ApiAddress, node.StartedAt), (one.Name, one.State, one.ApiAddress, one.StartedAt));
        var missing = await Assert.ThrowsAsync<CairnException>(() => cluster.GetNodeAsync("nope"));
        Assert.Equal(CairnErrorCode.NotFound, missing.Code);
    }

    [Fact]
    public async Task Heartbeats_refresh_pool_figures()
    {
        long used = 10;
        await Join("n1", pools: () => [new NodePool("p", 100, Interlocked.Read(ref used), 100 - Interlocked.Read(ref used))]);
        var cluster = await Cluster();
        Interlocked.Exchange(ref used, 60);
        await Eventually.HoldsAsync(async () => (await cluster.GetNodeAsync("n1")).Pools[0].FreeBytes == 40, Deadline, "new pool figures reach the store");
    }

    [Fact]
    public async Task A_node_that_dies_goes_Down_but_still_lists_and_rejoins_under_the_same_name_still_draining()
    {
        var a = await Join("a");
        var b = await Join("b", zone: "z2");
        var cluster = await Cluster();
        Assert.Equal(NodeState.Draining, (await cluster.SetDrainingAsync("b", true)).State);
        var registered = (await cluster.GetNodeAsync("b")).RegisteredAt;

        await b.AbandonAsync(); // a crash: no goodbye, the lease runs out
        var downAfter = await Eventually.HoldsAsync(async () => (await cluster.GetNodeAsync("b")).State == NodeState.Down, Deadline, "b shows Down");
        Assert.True(downAfter <= Deadline, $"b took {downAfter} to show Down");
        var nodes = await cluster.ListNodesAsync();
        Assert.Equal([("a", NodeState.Up), ("b", NodeState.Down)], nodes.Select(n => (n.Name, n.State)));
        Assert.Equal(("z2", true), (nodes[1].Zone, nodes[1].Draining));
        Assert.Null(nodes[1].LastHeartbeat);

        await Join("b", zone: "z2");
        var back = await cluster.GetNodeAsync("b");
        Assert.Equal((NodeState.Draining, registered), (back.State, back.RegisteredAt));
        Assert.Equal(NodeState.Up, (await cluster.SetDrainingAsync("b", false)).State);
        Assert.Equal(NodeState.Up, (await cluster.GetNodeAsync("a")).State);
        _ = a;
    }

    [Fact]
    public async Task A_node_that_stops_cleanly_is_Down_at_once_and_one_whose_lease_was_lost_comes_back_Up()
    {
        var a = await Join("a");
        var b = await Join("b");
        var cluster = await Cluster();
        await a.DisposeAsync();
        Assert.Equal(NodeState.Down, (await cluster.GetNodeAsync("a")).State);

        Assert.True(await (await ClientAsync()).RevokeLeaseAsync(b.LeaseId)); // as if the store lost it during an outage
        Assert.Equal(NodeState.Down, (await cluster.GetNodeAsync("b")).State);
        await Eventually.HoldsAsync(async () => (await cluster.GetNodeAsync("b")).State == NodeState.Up, Deadline, "b rejoins with a new lease");
    }

    [Fact]
    public async Task Draining_an_unknown_node_is_not_found()
    {
        var cluster = await Cluster();
        var e = await Assert.ThrowsAsync<CairnException>(() => cluster.SetDrainingAsync("ghost", true));
        Assert.Equal(CairnErrorCode.NotFound, e.Code);
        Assert.Equal(CairnErrorCode.InvalidArgument, (await Assert.ThrowsAsync<CairnException>(() => cluster.SetDrainingAsync("Bad Name", true))).Code);
    }

}

/// <summary>The contract on the embedded store: one store, shared by every "node" in the process.</summary>
public sealed class EmbeddedClusterContractTests : ClusterContractTests
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-cluster-" + Guid.NewGuid().ToString("N"));
    private EmbeddedClusterStore? _store;

    protected override TimeSpan Ttl => TimeSpan.FromSeconds(1);

    protected override string StoreKind => "embedded";

    protected override Task<IClusterStore> ClientAsync()
    {
        _store ??= EmbeddedClusterStore.Open(_dir, new EmbeddedClusterStoreOptions { LeaseSweepInterval = TimeSpan.FromMilliseconds(50) });
        return Task.FromResult<IClusterStore>(_store);
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>One real etcd for the class; each test wipes /cairn/ first.</summary>
public sealed class EtcdFixture : IAsyncLifetime
{
    public EtcdServer Server { get; private set; } = null!;

    public async ValueTask InitializeAsync() => Server = await EtcdServer.StartAsync();

    public async ValueTask DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>The contract on a real etcd: each "node" has its own client, as separate processes would.</summary>
public sealed class EtcdClusterContractTests(EtcdFixture etcd) : ClusterContractTests, IClassFixture<EtcdFixture>
{
    private readonly List<IClusterStore> _clients = [];

    protected override TimeSpan Ttl => TimeSpan.FromSeconds(2); // etcd's minimum TTL here is 1 s; 2 s leaves keep-alives room

    protected override string StoreKind => "etcd";

    protected override Task<IClusterStore> ClientAsync()
    {
        var client = ClusterStoreFactory.Open(etcd.Server.Spec);
        _clients.Add(client);
        return Task.FromResult(client);
    }

    public override async ValueTask InitializeAsync()
    {
        var client = await ClientAsync();
        foreach (var kv in (await client.RangeAsync("/cairn/")).Items)
        {
            await client.DeleteAsync(kv.Key);
        }
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var client in _clients)
        {
            await client.DisposeAsync();
        }
    }
}

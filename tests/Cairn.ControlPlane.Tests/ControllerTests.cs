using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// The controller's reconcile over a real embedded store: volume health judged from the owner's state, writes only on
/// change, fenced by the leader's term, converged after a restart, and driven by the view's watch while running.
/// </summary>
public sealed class ControllerTests : IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-ctl-" + Guid.NewGuid().ToString("N"));
    private readonly List<NodeMembership> _members = [];
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
        foreach (var member in _members)
        {
            await member.DisposeAsync();
        }
        await _view.DisposeAsync();
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private Controller NewController() => new("n1", _store, _view, () => _term) { ResyncInterval = TimeSpan.FromMilliseconds(200) };

    private async Task<NodeMembership> JoinAsync(string name)
    {
        var member = new NodeMembership(_store, new NodeIdentity(name), () => [new NodePool("p", 100L << 30, 0, 100L << 30)],
            options: new MembershipOptions { LeaseTtl = TimeSpan.FromSeconds(2) });
        await member.StartAsync();
        _members.Add(member);
        return member;
    }

    private async Task PutSpecAsync(string volume, string node) =>
        await _store.PutAsync(ClusterKeys.Volumes + volume, JsonSerializer.SerializeToUtf8Bytes(
            new VolumeSpec(volume, Guid.NewGuid().ToString("N"), 1L << 30, "p", DateTimeOffset.UtcNow, node), ControlPlaneJson.Default.VolumeSpec));

    /// <summary>Lets the view apply everything written so far, then runs one pass.</summary>
    private async Task<int> PassAsync(Controller controller)
    {
        Assert.True(await _view.WaitForRevisionAsync(_store.Revision, Deadline));
        return await controller.ReconcileAsync();
    }

    private async Task<VolumeHealth?> StoredHealthAsync(string volume) =>
        await _store.GetAsync(ClusterKeys.Health(volume)) is { } kv ? JsonSerializer.Deserialize(kv.Value, ClusterJson.Default.VolumeHealth) : null;

    [Fact]
    public async Task Volumes_on_down_nodes_are_unavailable_and_a_second_pass_writes_nothing()
    {
        await JoinAsync("n1");
        var n2 = await JoinAsync("n2");
        await n2.DisposeAsync(); // registered, then gone: Down
        await PutSpecAsync("on-up", "n1");
        await PutSpecAsync("on-down", "n2");
        await PutSpecAsync("on-stranger", "n9");
        var controller = NewController();

        Assert.Equal(3, await PassAsync(controller));

        Assert.Equal((VolumeHealthState.Healthy, "its node n1 is Up"), Summary(await StoredHealthAsync("on-up")));
        Assert.Equal((VolumeHealthState.Unavailable, "its node n2 is Down"), Summary(await StoredHealthAsync("on-down")));
        Assert.Equal((VolumeHealthState.Unavailable, "its node n9 has not joined the cluster"), Summary(await StoredHealthAsync("on-stranger")));
        Assert.Equal(0, await PassAsync(controller));
    }

    [Fact]
    public async Task Deleted_volumes_lose_their_health_record()
    {
        await JoinAsync("n1");
        await PutSpecAsync("v", "n1");
        var controller = NewController();
        Assert.Equal(1, await PassAsync(controller));

        await _store.DeleteAsync(ClusterKeys.Volumes + "v");

        Assert.Equal(1, await PassAsync(controller));
        Assert.Null(await StoredHealthAsync("v"));
    }

    [Fact]
    public async Task A_deposed_leader_writes_nothing()
    {
        await JoinAsync("n1");
        await PutSpecAsync("v", "n1");
        await _store.PutAsync(ClusterKeys.ControllerLeader, JsonSerializer.SerializeToUtf8Bytes(new LeaderRecord("n2", DateTimeOffset.UtcNow), ClusterJson.Default.LeaderRecord));

        Assert.Equal(-1, await PassAsync(NewController())); // _term still names n1's write of the key
        Assert.Null(await StoredHealthAsync("v"));
    }

    [Fact]
    public async Task A_restarted_controller_finds_nothing_to_do_and_keeps_the_since_time()
    {
        await JoinAsync("n1");
        await PutSpecAsync("v", "n1");
        await PassAsync(NewController());
        var before = await StoredHealthAsync("v");

        Assert.Equal(0, await PassAsync(NewController()));
        Assert.Equal(before, await StoredHealthAsync("v"));
    }

    [Fact]
    public async Task While_running_it_follows_node_changes_through_the_watch()
    {
        var n2 = await JoinAsync("n2");
        await PutSpecAsync("v", "n2");
        using var leading = new CancellationTokenSource();
        var run = NewController().RunAsync(leading.Token);
        try
        {
            await Eventually.HoldsAsync(async () => (await StoredHealthAsync("v"))?.State == VolumeHealthState.Healthy, Deadline, "v is Healthy");
            await n2.DisposeAsync();
            await Eventually.HoldsAsync(async () => (await StoredHealthAsync("v"))?.State == VolumeHealthState.Unavailable, Deadline, "v is Unavailable once n2 is Down");
            await JoinAsync("n2");
            await Eventually.HoldsAsync(async () => (await StoredHealthAsync("v"))?.State == VolumeHealthState.Healthy, Deadline, "v is Healthy again");
        }
        finally
        {
            await leading.CancelAsync();
            await run;
        }
    }

    private static (VolumeHealthState, string) Summary(VolumeHealth? health)
    {
        Assert.NotNull(health);
        return (health.State, health.Reason);
    }
}

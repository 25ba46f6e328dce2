using Cairn.ClusterStore;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>Two nodes on one shared store: each serves only its own volumes and never deletes the other's data.</summary>
public sealed class VolumeOwnershipTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-own-" + Guid.NewGuid().ToString("N"));
    private EmbeddedClusterStore _store = null!;

    public ValueTask InitializeAsync()
    {
        _store = EmbeddedClusterStore.Open(_dir);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<VolumeService> Start(string node, MemoryVolumePool pool)
    {
        var service = new VolumeService(_store, new PoolManager([pool]), ownership: VolumeOwnership.Clustered(node));
        await service.StartAsync();
        return service;
    }

    private Task Register(string node) => _store.PutAsync(ClusterKeys.Registration(node), "{}"u8.ToArray()).AsTask();

    [Fact]
    public async Task A_node_serves_only_the_volumes_whose_spec_names_it_and_names_are_unique_cluster_wide()
    {
        var poolA = new MemoryVolumePool("p");
        var poolB = new MemoryVolumePool("p");
        await using var a = await Start("a", poolA);
        await using var b = await Start("b", poolB);

        var v = await a.CreateAsync("v1", 1 << 20);
        Assert.Contains("\"node\":\"a\"", System.Text.Encoding.UTF8.GetString((await _store.GetAsync("/cairn/volumes/v1"))!.Value), StringComparison.Ordinal);
        var dup = await Assert.ThrowsAsync<CairnException>(() => b.CreateAsync("v1", 1 << 20));
        Assert.Equal(CairnErrorCode.AlreadyExists, dup.Code);

        await using var b2 = await Start("b", poolB);
        Assert.Empty(b2.List());
        await using var a2 = await Start("a", poolA);
        Assert.Equal(v.Id, Assert.Single(a2.List()).Id);
    }

    [Fact]
    public async Task Reconcile_keeps_data_another_nodes_spec_names_and_deletes_only_true_orphans_of_a_registered_node()
    {
        var shared = new MemoryVolumePool("p"); // the worst case: both nodes see the same pool directory
        await using var a = await Start("a", shared);
        var v = await a.CreateAsync("v1", 1 << 20);
        shared.CreateVolume("orphan", 1 << 20);

        await using (await Start("b", shared))
        {
            // b never registered in this store: it keeps even the orphan.
        }
        Assert.True(shared.TryGetVolume("orphan", out _));

        await Register("b");
        await using (await Start("b", shared))
        {
        }
        Assert.True(shared.TryGetVolume(v.Id, out _), "node b deleted data that node a's spec names");
        Assert.False(shared.TryGetVolume("orphan", out _));
    }
}

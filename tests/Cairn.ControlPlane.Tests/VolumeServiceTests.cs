using System.Text;
using Cairn.ClusterStore;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

public sealed class VolumeServiceTests : IAsyncLifetime
{
    private const long GiB = 1L << 30;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "cairn-cp-" + Guid.NewGuid().ToString("N"));
    private readonly MemoryVolumePool _small = new("small", 10 * GiB);
    private readonly MemoryVolumePool _big = new("big", 100 * GiB);
    private readonly ExportAddresses _addresses = new();
    private EmbeddedClusterStore _store = null!;
    private VolumeService _service = null!;

    public async ValueTask InitializeAsync()
    {
        _store = EmbeddedClusterStore.Open(_dir);
        _service = await StartService();
    }

    public async ValueTask DisposeAsync()
    {
        await _service.DisposeAsync();
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<VolumeService> StartService()
    {
        var service = new VolumeService(_store, new PoolManager([_small, _big]), _addresses);
        await service.StartAsync();
        return service;
    }

    private async Task Restart()
    {
        await _service.DisposeAsync();
        await _store.DisposeAsync();
        _store = EmbeddedClusterStore.Open(_dir);
        _service = await StartService();
    }

    [Fact]
    public async Task Create_stores_the_spec_and_a_thin_volume_in_the_pool_with_most_free_space()
    {
        var info = await _service.CreateAsync("db-1", 10 * GiB);

        Assert.Equal(("db-1", 10 * GiB, 0L, "big", true), (info.Name, info.SizeBytes, info.AllocatedBytes, info.Pool, info.Available));
        Assert.Equal(32, info.Id.Length);
        Assert.True(_big.TryGetVolume(info.Id, out _));
        var spec = await _store.GetAsync("/cairn/volumes/db-1");
        Assert.NotNull(spec);
        Assert.Contains($"\"id\":\"{info.Id}\"", Encoding.UTF8.GetString(spec.Value), StringComparison.Ordinal);
    }

    [Fact]
    public async Task List_and_get_report_volumes_with_their_export_address_once_one_is_known()
    {
        await _service.CreateAsync("b", 512 * 1024 * 1024);
        await _service.CreateAsync("a", GiB);
        Assert.Null(_service.Get("a").ExportAddress);

        _addresses.SetNbd("10.0.0.5", 10809);

        Assert.Equal(["a", "b"], _service.List().Select(v => v.Name));
        Assert.Equal("nbd://10.0.0.5:10809/a", _service.Get("a").ExportAddress);
    }

    [Theory]
    [InlineData("", "required")]
    [InlineData("Upper", "must start with a lowercase letter or a digit")]
    [InlineData("-dash", "must start with")]
    [InlineData("has space", "contains ' '")]
    [InlineData("slash/x", "contains '/'")]
    [InlineData("a234567890123456789012345678901234567890123456789012345678901234", "the limit is 63")]
    public async Task Bad_names_are_refused_naming_the_field_and_reason(string name, string reason)
    {
        var e = await Assert.ThrowsAsync<CairnException>(() => _service.CreateAsync(name, GiB));
        Assert.Equal((CairnErrorCode.InvalidArgument, "name"), (e.Code, e.Field));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Good_names_use_the_whole_alphabet()
    {
        var name = "0a-b_c.d" + new string('z', 55);
        Assert.Equal(63, name.Length);
        Assert.Equal(name, (await _service.CreateAsync(name, GiB)).Name);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-4096L)]
    [InlineData(1000L)]
    public async Task Bad_sizes_are_refused(long size)
    {
        var e = await Assert.ThrowsAsync<CairnException>(() => _service.CreateAsync("v", size));
        Assert.Equal((CairnErrorCode.InvalidArgument, "size"), (e.Code, e.Field));
    }

    [Fact]
    public async Task A_duplicate_name_is_refused_and_the_first_volume_is_untouched()
    {
        var first = await _service.CreateAsync("v", GiB);
        var e = await Assert.ThrowsAsync<CairnException>(() => _service.CreateAsync("v", 2 * GiB));
        Assert.Equal(CairnErrorCode.AlreadyExists, e.Code);
        Assert.Equal(first.Id, _service.Get("v").Id);
        Assert.Single(_big.ListVolumes());
    }

    [Fact]
    public async Task Unknown_volumes_are_not_found()
    {
        Assert.Equal(CairnErrorCode.NotFound, Assert.Throws<CairnException>(() => _service.Get("nope")).Code);
        Assert.Equal(CairnErrorCode.NotFound, (await Assert.ThrowsAsync<CairnException>(() => _service.GrowAsync("nope", GiB))).Code);
        Assert.Equal(CairnErrorCode.NotFound, (await Assert.ThrowsAsync<CairnException>(() => _service.DeleteAsync("nope", force: false))).Code);
    }

    [Fact]
    public async Task Grow_updates_spec_and_volume_and_shrink_is_refused_with_the_reason()
    {
        var info = await _service.CreateAsync("v", GiB);
        var grown = await _service.GrowAsync("v", 3 * GiB);
        Assert.Equal(3 * GiB, grown.SizeBytes);
        Assert.True(_big.TryGetVolume(info.Id, out var stored));
        Assert.Equal(3 * GiB, stored.SizeBytes);
        Assert.Equal(3 * GiB, (await _service.GrowAsync("v", 3 * GiB)).SizeBytes); // same size: no-op

        var e = await Assert.ThrowsAsync<CairnException>(() => _service.GrowAsync("v", GiB));
        Assert.Equal((CairnErrorCode.InvalidArgument, "size"), (e.Code, e.Field));
        Assert.Contains("can only grow", e.Message, StringComparison.Ordinal);

        await Restart();
        Assert.Equal(3 * GiB, _service.Get("v").SizeBytes);
    }

    [Fact]
    public async Task Delete_is_refused_while_a_client_is_attached_and_force_revokes_the_session()
    {
        var info = await _service.CreateAsync("v", GiB);
        using var session = _service.TryOpen("v", "10.0.0.9:50000");
        Assert.NotNull(session);
        Assert.Equal("10.0.0.9:50000", Assert.Single(_service.Get("v").Clients).Client);

        var e = await Assert.ThrowsAsync<CairnException>(() => _service.DeleteAsync("v", force: false));
        Assert.Equal(CairnErrorCode.Busy, e.Code);
        Assert.Contains("connected client", e.Message, StringComparison.Ordinal);
        Assert.Contains("force", e.Message, StringComparison.Ordinal);
        Assert.False(session.Revoked.IsCancellationRequested);

        await _service.DeleteAsync("v", force: true);
        Assert.True(session.Revoked.IsCancellationRequested);
        Assert.Empty(_service.List());
        Assert.False(_big.TryGetVolume(info.Id, out _));
        Assert.Null(await _store.GetAsync("/cairn/volumes/v"));
        Assert.Null(_service.TryOpen("v", "late client"));
    }

    [Fact]
    public async Task Closing_a_session_detaches_the_client_so_a_plain_delete_works()
    {
        await _service.CreateAsync("v", GiB);
        var session = _service.TryOpen("v", "c1")!;
        Assert.Equal(GiB, session.Device.SizeBytes);
        Assert.Single(_service.ListExports());
        session.Dispose();
        Assert.Empty(_service.Get("v").Clients);
        await _service.DeleteAsync("v", force: false);
        Assert.Null(_service.TryOpen("v", "c2"));
        Assert.Null(_service.DefaultExportName);
    }

    [Fact]
    public async Task Data_written_through_an_export_lands_in_the_stored_volume()
    {
        var info = await _service.CreateAsync("v", GiB);
        using var session = _service.TryOpen("v", "c")!;
        await session.Device.WriteAsync(8192, new byte[] { 1, 2, 3 });
        Assert.Equal(4096, _service.Get("v").AllocatedBytes);
        Assert.True(_big.TryGetVolume(info.Id, out var stored));
        var back = new byte[3];
        await stored.ReadAsync(8192, back);
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
    }

    [Fact]
    public async Task Reconcile_creates_data_for_a_spec_without_it_and_deletes_data_without_a_spec()
    {
        var kept = await _service.CreateAsync("kept", GiB);
        var lost = await _service.CreateAsync("lost-data", 2 * GiB);
        _big.DeleteVolume(lost.Id);                    // crash after the spec was written, before the data
        _big.CreateVolume("0123456789abcdef0123456789abcdef", GiB); // crash after the spec was deleted, before the data

        await Restart();

        Assert.True(_big.TryGetVolume(lost.Id, out var recreated));
        Assert.Equal(2 * GiB, recreated.SizeBytes);
        Assert.False(_big.TryGetVolume("0123456789abcdef0123456789abcdef", out _));
        Assert.True(_big.TryGetVolume(kept.Id, out _));
        Assert.Equal(["kept", "lost-data"], _service.List().Select(v => v.Name));
    }

    [Fact]
    public async Task Reconcile_keeps_data_when_the_cluster_store_was_never_written()
    {
        _big.CreateVolume("0123456789abcdef0123456789abcdef", GiB); // a fresh store beside a used pool: wrong data dir, not a crash
        await Restart();
        Assert.True(_big.TryGetVolume("0123456789abcdef0123456789abcdef", out _));
    }

    [Fact]
    public async Task A_volume_whose_pool_is_missing_is_listed_as_unavailable_not_deleted()
    {
        await _service.CreateAsync("v", GiB);
        await _service.DisposeAsync();
        _service = new VolumeService(_store, new PoolManager([_small]), _addresses);
        await _service.StartAsync();

        var info = _service.Get("v");
        Assert.False(info.Available);
        Assert.Null(_service.TryOpen("v", "c"));
        var e = await Assert.ThrowsAsync<CairnException>(() => _service.GrowAsync("v", 2 * GiB));
        Assert.Equal(CairnErrorCode.Unavailable, e.Code);
    }

    [Fact]
    public void Pools_report_capacity_used_and_free()
    {
        var pools = _service.ListPools();
        Assert.Equal(["small", "big"], pools.Select(p => p.Name));
        Assert.Equal((100 * GiB, 0L, 100 * GiB), (pools[1].CapacityBytes, pools[1].UsedBytes, pools[1].FreeBytes));
    }

    [Fact]
    public void Pool_names_come_from_the_directory_and_must_be_distinct()
    {
        Assert.Equal("fast", new PoolConfig("/data/pools/fast/").Name);
        var e = Assert.Throws<CairnException>(() => new PoolManager([new MemoryVolumePool("a"), new MemoryVolumePool("a")]));
        Assert.Contains("two pools are named 'a'", e.Message, StringComparison.Ordinal);
    }
}

public sealed class VolumeServiceLimitTests
{
    [Fact]
    public async Task A_size_beyond_the_largest_volume_is_refused_before_anything_is_written()
    {
        string dir = Path.Combine(Path.GetTempPath(), "cairn-cp-" + Guid.NewGuid().ToString("N"));
        await using var store = EmbeddedClusterStore.Open(dir);
        var pool = new MemoryVolumePool("p");
        await using var service = new VolumeService(store, new PoolManager([pool]));
        await service.StartAsync();
        var e = await Assert.ThrowsAsync<CairnException>(() => service.CreateAsync("huge", Cairn.BlockStore.BlockPool.MaxVolumeBytes + 512));
        Assert.Equal((CairnErrorCode.InvalidArgument, "size"), (e.Code, e.Field));
        Assert.Contains("largest volume", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, store.Revision);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task A_volume_reconcile_cannot_heal_stays_unavailable_and_the_rest_start()
    {
        string dir = Path.Combine(Path.GetTempPath(), "cairn-cp-" + Guid.NewGuid().ToString("N"));
        await using var store = EmbeddedClusterStore.Open(dir);
        // A spec whose data is missing, in a pool that refuses to create it.
        await store.PutAsync(VolumeService.VolumesPrefix + "broken",
            System.Text.Encoding.UTF8.GetBytes("{\"name\":\"broken\",\"id\":\"exists-already\",\"sizeBytes\":4096,\"pool\":\"p\",\"createdAt\":\"2026-01-01T00:00:00Z\"}"));
        var pool = new FailingCreatePool("p");
        await using var service = new VolumeService(store, new PoolManager([pool]));
        await service.StartAsync();
        Assert.False(service.Get("broken").Available);
        Directory.Delete(dir, recursive: true);
    }

    private sealed class FailingCreatePool(string name) : IVolumePool
    {
        public string Name { get; } = name;
        public string Directory => "/nowhere";
        public long CapacityBytes => 1 << 30;
        public long UsedBytes => 0;
        public long FreeBytes => CapacityBytes;
        public IReadOnlyList<Cairn.BlockStore.StoredVolumeInfo> ListVolumes() => [];
        public Cairn.BlockStore.StoredVolume CreateVolume(string volumeId, long sizeBytes) => throw new IOException("disk on fire");
        public bool TryGetVolume(string volumeId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Cairn.BlockStore.StoredVolume? volume)
        {
            volume = null;
            return false;
        }
        public void DeleteVolume(string volumeId) { }
        public void Dispose() { }
    }
}

using System.Diagnostics;

namespace Cairn.ClusterStore.Tests;

/// <summary>
/// What every <see cref="IClusterStore"/> promises, run against each implementation. Tests may share one server,
/// so each works under its own key prefix and checks revisions relative to what it has read.
/// </summary>
public abstract class ClusterStoreContractTests
{
    protected static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);

    /// <summary>A key prefix no other test uses.</summary>
    protected string P { get; } = $"/t/{Guid.NewGuid():N}/";

    protected abstract ValueTask<IClusterStore> OpenAsync();

    /// <summary>Makes the store forget history before <paramref name="revision"/>.</summary>
    protected abstract Task CompactAsync(IClusterStore store, long revision);

    /// <summary>Breaks the store's live watch connections as a network failure would (nothing to break in-process).</summary>
    protected abstract void CutWatchConnections(IClusterStore store);

    [Fact]
    public async Task Put_get_and_delete_track_key_revisions()
    {
        await using var store = await OpenAsync();
        long r1 = await store.PutAsync(P + "a", Bytes.Of("1"));
        long r2 = await store.PutAsync(P + "b", Bytes.Of("2"));
        long r3 = await store.PutAsync(P + "a", Bytes.Of("3"));
        Assert.True(r1 < r2 && r2 < r3);
        Assert.True(store.Revision >= r3);
        var a = await store.GetAsync(P + "a");
        Assert.NotNull(a);
        Assert.Equal("3", a.Text());
        Assert.Equal((P + "a", r1, r3, 2L, 0L), (a.Key, a.CreateRevision, a.ModRevision, a.Version, a.LeaseId));
        Assert.Null(await store.GetAsync(P + "missing"));

        long before = (await store.RangeAsync(P)).Revision;
        Assert.False(await store.DeleteAsync(P + "nope"));
        Assert.Equal(before, (await store.RangeAsync(P)).Revision); // deleting nothing writes nothing
        Assert.True(await store.DeleteAsync(P + "a"));
        Assert.Equal(before + 1, (await store.RangeAsync(P)).Revision);
        Assert.Null(await store.GetAsync(P + "a"));

        long r4 = await store.PutAsync(P + "a", Bytes.Of("again"));
        var recreated = (await store.GetAsync(P + "a"))!;
        Assert.Equal((r4, r4, 1L), (recreated.CreateRevision, recreated.ModRevision, recreated.Version)); // a new life after deletion
    }

    [Fact]
    public async Task Values_are_bytes_and_keys_are_unicode()
    {
        await using var store = await OpenAsync();
        byte[] binary = [0, 1, 2, 0xff, 0xfe, (byte)'\n', 0];
        await store.PutAsync(P + "bin", binary);
        await store.PutAsync(P + "empty", ReadOnlyMemory<byte>.Empty);
        await store.PutAsync(P + "ключ/é", Bytes.Of("u"));
        Assert.Equal(binary, (await store.GetAsync(P + "bin"))!.Value);
        Assert.Empty((await store.GetAsync(P + "empty"))!.Value);
        Assert.Equal("u", (await store.GetAsync(P + "ключ/é"))!.Text());
    }

    [Fact]
    public async Task Range_returns_only_the_prefix_in_ordinal_order_at_one_revision()
    {
        await using var store = await OpenAsync();
        long last = 0;
        foreach (var key in new[] { "v/b", "w/a", "v/a", "v", "u/z", "v/c/d" })
        {
            last = await store.PutAsync(P + key, Bytes.Of(key));
        }
        var range = await store.RangeAsync(P + "v/");
        Assert.Equal([P + "v/a", P + "v/b", P + "v/c/d"], range.Items.Select(kv => kv.Key));
        Assert.Equal(["v/a", "v/b", "v/c/d"], range.Items.Select(kv => kv.Text()));
        Assert.True(range.Revision >= last);
        Assert.Equal(6, (await store.RangeAsync(P)).Items.Count);
        Assert.Empty((await store.RangeAsync(P + "x")).Items);
        Assert.Contains((await store.RangeAsync("")).Items, kv => kv.Key == P + "v");
    }

    [Fact]
    public async Task Compare_and_swap_on_mod_revision_rejects_a_stale_writer()
    {
        await using var store = await OpenAsync();
        string k = P + "k";
        await store.PutAsync(k, Bytes.Of("v1"));
        var read = (await store.GetAsync(k))!;

        var first = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs(k, read.ModRevision)).Then(TxnOp.Put(k, Bytes.Of("mine"))));
        var second = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs(k, read.ModRevision)).Then(TxnOp.Put(k, Bytes.Of("stale"))));

        Assert.True(first.Succeeded);
        Assert.False(second.Succeeded);
        Assert.Equal("mine", (await store.GetAsync(k))!.Text());
        Assert.Equal(first.Revision, second.Revision); // the failed branch had no ops, so nothing was written
        Assert.Equal(first.Revision, (await store.GetAsync(k))!.ModRevision);
    }

    [Fact]
    public async Task Transactions_run_the_else_branch_and_apply_all_ops_at_one_revision()
    {
        await using var store = await OpenAsync();
        string k = P + "k", j = P + "j", conflicts = P + "conflicts";
        var create = Transaction.If(Compare.Missing(k)).Then(TxnOp.Put(k, Bytes.Of("a")));
        Assert.True((await store.CommitAsync(create)).Succeeded);
        var again = await store.CommitAsync(create.Else(TxnOp.Put(conflicts, Bytes.Of("1"))));
        Assert.False(again.Succeeded);
        Assert.Equal("a", (await store.GetAsync(k))!.Text());
        Assert.Equal(again.Revision, (await store.GetAsync(conflicts))!.ModRevision);

        var both = await store.CommitAsync(Transaction.If(Compare.Exists(k)).Then(TxnOp.Delete(k), TxnOp.Put(j, Bytes.Of("b"))));
        Assert.True(both.Succeeded);
        Assert.Null(await store.GetAsync(k));
        Assert.Equal(both.Revision, (await store.GetAsync(j))!.ModRevision);
        Assert.Equal(again.Revision + 1, both.Revision); // the delete and the put share one revision

        // Version and create-revision compares, and several compares that must all hold.
        await store.PutAsync(j, Bytes.Of("c"));
        var jv = (await store.GetAsync(j))!;
        Assert.Equal(2, jv.Version);
        var byVersion = await store.CommitAsync(new Transaction(
            [new Compare(j, CompareTarget.Version, CompareOp.Equal, 2), new Compare(j, CompareTarget.CreateRevision, CompareOp.Equal, both.Revision)],
            [TxnOp.Put(j, Bytes.Of("v3"))], []));
        Assert.True(byVersion.Succeeded);
        var oneFails = await store.CommitAsync(new Transaction(
            [new Compare(j, CompareTarget.Version, CompareOp.Greater, 1), new Compare(j, CompareTarget.ModRevision, CompareOp.Less, jv.ModRevision)],
            [TxnOp.Put(j, Bytes.Of("no"))], [TxnOp.Delete(j)]));
        Assert.False(oneFails.Succeeded);
        Assert.Null(await store.GetAsync(j));
    }

    [Fact]
    public async Task Watch_from_a_range_revision_sees_writes_made_between_the_range_and_the_watch()
    {
        await using var store = await OpenAsync();
        await store.PutAsync(P + "v/a", Bytes.Of("1"));
        var range = await store.RangeAsync(P + "v/");
        long rb = await store.PutAsync(P + "v/b", Bytes.Of("2"));   // after the read, before the watch
        await store.PutAsync(P + "other", Bytes.Of("x"));           // outside the prefix
        await store.DeleteAsync(P + "v/a");
        long ra = (await store.RangeAsync(P)).Revision;

        using var cts = new CancellationTokenSource(Deadline);
        var watching = Collect(store.WatchAsync(P + "v/", range.Revision + 1, cts.Token), 3);
        long rc = await store.PutAsync(P + "v/c", Bytes.Of("3")); // live
        var events = await watching;

        Assert.Equal([(WatchEventType.Put, P + "v/b", rb), (WatchEventType.Delete, P + "v/a", ra), (WatchEventType.Put, P + "v/c", rc)],
            events.Select(e => (e.Type, e.Kv.Key, e.Revision)));
        Assert.Equal("2", events[0].Kv.Text());
        Assert.Empty(events[1].Kv.Value);
    }

    [Fact]
    public async Task Watch_from_zero_starts_at_the_call()
    {
        await using var store = await OpenAsync();
        await store.PutAsync(P + "a", Bytes.Of("old"));
        using var cts = new CancellationTokenSource(Deadline);
        var stream = store.WatchAsync(P, 0, cts.Token);
        long r = await store.PutAsync(P + "a", Bytes.Of("new")); // before the first MoveNextAsync, after the call
        await using var e = stream.GetAsyncEnumerator(cts.Token);
        Assert.True(await e.MoveNextAsync());
        Assert.Equal((r, "new"), (e.Current.Revision, e.Current.Kv.Text()));
    }

    [Fact]
    public async Task Watch_from_a_compacted_revision_says_so()
    {
        await using var store = await OpenAsync();
        long first = await store.PutAsync(P + "k", Bytes.Of("0"));
        long last = first;
        for (int i = 1; i < 5; i++)
        {
            last = await store.PutAsync(P + "k", Bytes.Of(i.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        await CompactAsync(store, last);
        using var cts = new CancellationTokenSource(Deadline);
        var error = await Assert.ThrowsAsync<RevisionCompactedException>(async () =>
        {
            await foreach (var _ in store.WatchAsync(P, first, cts.Token))
            {
            }
        });
        Assert.True(error.OldestAvailableRevision > first);
        Assert.Contains("compacted", error.Message, StringComparison.Ordinal);

        // From the compaction point on, watching works again.
        await using var e = store.WatchAsync(P, last, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await e.MoveNextAsync());
        Assert.Equal(last, e.Current.Revision);
    }

    [Fact]
    public async Task A_watch_resumes_after_its_connection_is_cut_with_no_event_lost_or_repeated()
    {
        await using var store = await OpenAsync();
        var range = await store.RangeAsync(P);
        using var cts = new CancellationTokenSource(Deadline);
        await using var e = store.WatchAsync(P, range.Revision + 1, cts.Token).GetAsyncEnumerator(cts.Token);
        var expected = new List<long> { await store.PutAsync(P + "a", Bytes.Of("1")) };
        Assert.True(await e.MoveNextAsync());
        var seen = new List<WatchEvent> { e.Current };

        for (int round = 0; round < 3; round++)
        {
            CutWatchConnections(store);
            // Written while the watcher is cut off (or reconnecting): it must still see them, once each, in order.
            expected.Add(await store.PutAsync(P + "b" + round, Bytes.Of("2")));
            expected.Add((await store.CommitAsync(Transaction.If().Then(TxnOp.Put(P + "x" + round, Bytes.Of("x")), TxnOp.Delete(P + "a")))).Revision);
            int want = seen.Count + (round == 0 ? 3 : 2); // the first round's transaction also deletes "a"
            while (seen.Count < want)
            {
                Assert.True(await e.MoveNextAsync());
                seen.Add(e.Current);
            }
        }
        Assert.Equal(expected, seen.Select(s => s.Revision).Distinct());
        Assert.Equal(seen.Count, seen.Select(s => (s.Revision, s.Kv.Key)).Distinct().Count());
        Assert.Equal(1, seen.Count(s => s.Type == WatchEventType.Delete));
    }

    [Fact]
    public async Task Keep_alive_keeps_leased_keys_and_expiry_deletes_them()
    {
        await using var store = await OpenAsync();
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(1));
        Assert.True(lease.Ttl >= TimeSpan.FromSeconds(1));
        long put = await store.PutAsync(P + "node", Bytes.Of("alive"), lease.Id);
        await store.PutAsync(P + "keep", Bytes.Of("x"));
        Assert.Equal(lease.Id, (await store.GetAsync(P + "node"))!.LeaseId);

        var kept = Stopwatch.StartNew();
        while (kept.Elapsed < lease.Ttl * 2.5)
        {
            var renewed = await store.KeepAliveAsync(lease.Id);
            Assert.Equal(lease.Id, renewed.Id);
            await Task.Delay(lease.Ttl / 4);
        }
        Assert.NotNull(await store.GetAsync(P + "node")); // well past its TTL, but kept alive

        var expiry = Stopwatch.StartNew();
        while (await store.GetAsync(P + "node") is not null)
        {
            Assert.True(expiry.Elapsed < Deadline, "the leased key outlived its lease");
            await Task.Delay(100);
        }
        Assert.NotNull(await store.GetAsync(P + "keep"));
        await Assert.ThrowsAsync<LeaseNotFoundException>(async () => await store.KeepAliveAsync(lease.Id));

        using var cts = new CancellationTokenSource(Deadline);
        var events = await Collect(store.WatchAsync(P + "node", put + 1, cts.Token), 1);
        Assert.Equal((WatchEventType.Delete, P + "node"), (events[0].Type, events[0].Kv.Key));
    }

    [Fact]
    public async Task Revoking_a_lease_deletes_its_keys_and_a_put_on_an_unknown_lease_fails()
    {
        await using var store = await OpenAsync();
        var lease = await store.GrantLeaseAsync(TimeSpan.FromMinutes(1));
        await store.PutAsync(P + "a", Bytes.Of("1"), lease.Id);
        await store.PutAsync(P + "b", Bytes.Of("2"), lease.Id);
        await store.PutAsync(P + "b", Bytes.Of("3")); // re-put without the lease detaches it
        Assert.True(await store.RevokeLeaseAsync(lease.Id));
        Assert.False(await store.RevokeLeaseAsync(lease.Id));
        Assert.Null(await store.GetAsync(P + "a"));
        Assert.NotNull(await store.GetAsync(P + "b"));
        await Assert.ThrowsAsync<LeaseNotFoundException>(async () => await store.PutAsync(P + "c", Bytes.Of("x"), lease.Id));
        await Assert.ThrowsAsync<LeaseNotFoundException>(async () =>
            await store.CommitAsync(Transaction.If().Then(TxnOp.Put(P + "c", Bytes.Of("x"), lease.Id))));
        await Assert.ThrowsAsync<LeaseNotFoundException>(async () => await store.KeepAliveAsync(lease.Id));
        Assert.Null(await store.GetAsync(P + "c"));
    }

    /// <summary>Reads <paramref name="count"/> events, or fails when the stream's token runs out first.</summary>
    protected static async Task<List<WatchEvent>> Collect(IAsyncEnumerable<WatchEvent> stream, int count)
    {
        var events = new List<WatchEvent>();
        await foreach (var e in stream)
        {
            events.Add(e);
            if (events.Count == count)
            {
                break;
            }
        }
        return events;
    }
}

public sealed class EmbeddedClusterStoreContractTests : ClusterStoreContractTests, IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    protected override ValueTask<IClusterStore> OpenAsync() => ValueTask.FromResult<IClusterStore>(EmbeddedClusterStore.Open(_dir.Path));

    protected override Task CompactAsync(IClusterStore store, long revision)
    {
        ((EmbeddedClusterStore)store).CompactHistory(revision);
        return Task.CompletedTask;
    }

    protected override void CutWatchConnections(IClusterStore store)
    {
        // In-process watches have no connection to lose.
    }
}

/// <summary>One real etcd for the whole class; its tests run one at a time and keep to their own prefixes.</summary>
public sealed class EtcdFixture : IAsyncLifetime
{
    public EtcdServer Server { get; private set; } = null!;

    public async ValueTask InitializeAsync() => Server = await EtcdServer.StartAsync();

    public async ValueTask DisposeAsync() => await Server.DisposeAsync();
}

public sealed class EtcdClusterStoreContractTests(EtcdFixture etcd) : ClusterStoreContractTests, IClassFixture<EtcdFixture>
{
    protected override ValueTask<IClusterStore> OpenAsync() => ValueTask.FromResult(ClusterStoreFactory.Open(etcd.Server.Spec));

    protected override Task CompactAsync(IClusterStore store, long revision) => ((EtcdClusterStore)store).CompactAsync(revision);

    protected override void CutWatchConnections(IClusterStore store) => ((EtcdClusterStore)store).AbortWatchStreams();
}

namespace Cairn.ClusterStore.Tests;

public sealed class EmbeddedClusterStoreTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private EmbeddedClusterStore Open(EmbeddedClusterStoreOptions? options = null) => EmbeddedClusterStore.Open(_dir.Path, options);

    [Fact]
    public async Task Put_bumps_the_global_revision_and_tracks_key_revisions()
    {
        await using var store = Open();
        Assert.Equal(0, store.Revision);
        long r1 = await store.PutAsync("/a", Bytes.Of("1"));
        long r2 = await store.PutAsync("/b", Bytes.Of("2"));
        long r3 = await store.PutAsync("/a", Bytes.Of("3"));
        Assert.Equal([1L, 2L, 3L], [r1, r2, r3]);
        var a = await store.GetAsync("/a");
        Assert.NotNull(a);
        Assert.Equal("3", a.Text());
        Assert.Equal(1, a.CreateRevision);
        Assert.Equal(3, a.ModRevision);
        Assert.Equal(2, a.Version);
        Assert.Null(await store.GetAsync("/missing"));
    }

    [Fact]
    public async Task Deleting_a_missing_key_changes_nothing()
    {
        await using var store = Open();
        await store.PutAsync("/a", Bytes.Of("1"));
        Assert.False(await store.DeleteAsync("/nope"));
        Assert.Equal(1, store.Revision);
        Assert.True(await store.DeleteAsync("/a"));
        Assert.Equal(2, store.Revision);
        Assert.Null(await store.GetAsync("/a"));
    }

    [Fact]
    public async Task Range_returns_only_the_prefix_in_ordinal_order()
    {
        await using var store = Open();
        foreach (var key in new[] { "/v/b", "/w/a", "/v/a", "/v", "/u/z", "/v/c/d" })
        {
            await store.PutAsync(key, Bytes.Of(key));
        }
        var range = await store.RangeAsync("/v/");
        Assert.Equal(["/v/a", "/v/b", "/v/c/d"], range.Items.Select(kv => kv.Key));
        Assert.Equal(6, range.Revision);
        Assert.Equal(6, (await store.RangeAsync("")).Items.Count);
    }

    [Fact]
    public async Task Compare_and_swap_on_mod_revision_rejects_a_stale_writer()
    {
        await using var store = Open();
        await store.PutAsync("/k", Bytes.Of("v1"));
        var read = (await store.GetAsync("/k"))!;

        var first = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs("/k", read.ModRevision)).Then(TxnOp.Put("/k", Bytes.Of("mine"))));
        var second = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs("/k", read.ModRevision)).Then(TxnOp.Put("/k", Bytes.Of("stale"))));

        Assert.True(first.Succeeded);
        Assert.False(second.Succeeded);
        Assert.Equal("mine", (await store.GetAsync("/k"))!.Text());
        Assert.Equal(first.Revision, second.Revision); // the failed branch had no ops, so nothing was written
    }

    [Fact]
    public async Task Create_if_missing_succeeds_once_and_runs_the_else_branch_after()
    {
        await using var store = Open();
        var create = Transaction.If(Compare.Missing("/k")).Then(TxnOp.Put("/k", Bytes.Of("a")));
        Assert.True((await store.CommitAsync(create)).Succeeded);
        var again = await store.CommitAsync(create.Else(TxnOp.Put("/conflicts", Bytes.Of("1"))));
        Assert.False(again.Succeeded);
        Assert.Equal("a", (await store.GetAsync("/k"))!.Text());
        Assert.NotNull(await store.GetAsync("/conflicts"));
        Assert.True((await store.CommitAsync(Transaction.If(Compare.Exists("/k")).Then(TxnOp.Delete("/k"), TxnOp.Put("/j", Bytes.Of("b"))))).Succeeded);
        Assert.Null(await store.GetAsync("/k"));
        Assert.Equal(3, store.Revision); // the delete and the put share one revision
        Assert.Equal(3, (await store.GetAsync("/j"))!.ModRevision);
    }

    [Fact]
    public async Task Watch_from_a_range_revision_sees_writes_made_between_the_range_and_the_watch()
    {
        await using var store = Open();
        await store.PutAsync("/v/a", Bytes.Of("1"));
        var range = await store.RangeAsync("/v/");
        await store.PutAsync("/v/b", Bytes.Of("2"));   // after the read, before the watch
        await store.PutAsync("/other", Bytes.Of("x")); // outside the prefix
        await store.DeleteAsync("/v/a");

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var events = new List<WatchEvent>();
        var watching = Task.Run(async () =>
        {
            await foreach (var e in store.WatchAsync("/v/", range.Revision + 1, cts.Token))
            {
                events.Add(e);
                if (events.Count == 3)
                {
                    break;
                }
            }
        });
        await store.PutAsync("/v/c", Bytes.Of("3")); // live
        await watching;

        Assert.Equal([(WatchEventType.Put, "/v/b", 2L), (WatchEventType.Delete, "/v/a", 4L), (WatchEventType.Put, "/v/c", 5L)],
            events.Select(e => (e.Type, e.Kv.Key, e.Revision)));
    }

    [Fact]
    public async Task Watch_from_zero_starts_at_the_call()
    {
        await using var store = Open();
        await store.PutAsync("/a", Bytes.Of("old"));
        var stream = store.WatchAsync("/", 0, TestContext.Current.CancellationToken);
        await store.PutAsync("/a", Bytes.Of("new")); // before the first MoveNextAsync, after the call
        await using var e = stream.GetAsyncEnumerator(TestContext.Current.CancellationToken);
        Assert.True(await e.MoveNextAsync());
        Assert.Equal(2, e.Current.Revision);
    }

    [Fact]
    public async Task Watch_from_a_compacted_revision_says_so()
    {
        await using var store = Open(new EmbeddedClusterStoreOptions { WatchHistoryEvents = 2 });
        for (int i = 0; i < 10; i++)
        {
            await store.PutAsync("/k", Bytes.Of(i.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        var error = Assert.Throws<RevisionCompactedException>(() => store.WatchAsync("/", 1));
        Assert.True(error.OldestAvailableRevision > 1);
        Assert.Contains("compacted", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Keys_attached_to_a_lease_vanish_when_it_expires_and_watchers_see_the_delete()
    {
        var clock = new ManualClock();
        await using var store = Open(new EmbeddedClusterStoreOptions { TimeProvider = clock, LeaseSweepInterval = TimeSpan.FromHours(1) });
        var lease = await store.GrantLeaseAsync(TimeSpan.FromSeconds(10));
        await store.PutAsync("/nodes/n1", Bytes.Of("alive"), lease.Id);
        await store.PutAsync("/keep", Bytes.Of("x"));
        long before = store.Revision;

        clock.Advance(TimeSpan.FromSeconds(6));
        await store.KeepAliveAsync(lease.Id);
        clock.Advance(TimeSpan.FromSeconds(6));
        store.ExpireLeases();
        Assert.NotNull(await store.GetAsync("/nodes/n1")); // kept alive: 12 s after grant but 6 s after keep-alive

        clock.Advance(TimeSpan.FromSeconds(5));
        store.ExpireLeases();
        Assert.Null(await store.GetAsync("/nodes/n1"));
        Assert.NotNull(await store.GetAsync("/keep"));
        await Assert.ThrowsAsync<LeaseNotFoundException>(async () => await store.KeepAliveAsync(lease.Id));

        await using var e = store.WatchAsync("/nodes/", before + 1).GetAsyncEnumerator(TestContext.Current.CancellationToken);
        Assert.True(await e.MoveNextAsync());
        Assert.Equal(WatchEventType.Delete, e.Current.Type);
    }

    [Fact]
    public async Task Revoking_a_lease_deletes_its_keys_and_a_put_on_an_unknown_lease_fails()
    {
        await using var store = Open();
        var lease = await store.GrantLeaseAsync(TimeSpan.FromMinutes(1));
        await store.PutAsync("/a", Bytes.Of("1"), lease.Id);
        await store.PutAsync("/b", Bytes.Of("2"), lease.Id);
        await store.PutAsync("/b", Bytes.Of("3")); // re-put without the lease detaches it
        Assert.True(await store.RevokeLeaseAsync(lease.Id));
        Assert.False(await store.RevokeLeaseAsync(lease.Id));
        Assert.Null(await store.GetAsync("/a"));
        Assert.NotNull(await store.GetAsync("/b"));
        await Assert.ThrowsAsync<LeaseNotFoundException>(async () => await store.PutAsync("/c", Bytes.Of("x"), lease.Id));
    }

    [Fact]
    public async Task Data_and_revisions_survive_reopen_and_leased_keys_do_not()
    {
        await using (var store = Open())
        {
            await store.PutAsync("/a", Bytes.Of("1"));
            await store.PutAsync("/a", Bytes.Of("2"));
            await store.PutAsync("/b", Bytes.Of("x"));
            await store.DeleteAsync("/b");
            var lease = await store.GrantLeaseAsync(TimeSpan.FromHours(1));
            await store.PutAsync("/ephemeral", Bytes.Of("e"), lease.Id);
        }
        await using (var store = Open())
        {
            var a = (await store.GetAsync("/a"))!;
            Assert.Equal("2", a.Text());
            Assert.Equal((1L, 2L, 2L), (a.CreateRevision, a.ModRevision, a.Version));
            Assert.Null(await store.GetAsync("/b"));
            Assert.Null(await store.GetAsync("/ephemeral"));
            Assert.Equal(6, store.Revision); // 5 writes + the delete of the leased key on open
            Assert.Equal(7, await store.PutAsync("/c", Bytes.Of("c")));
        }
    }

    [Fact]
    public async Task A_torn_tail_is_dropped_on_open_and_later_writes_survive()
    {
        await using (var store = Open())
        {
            await store.PutAsync("/a", Bytes.Of("1"));
            await store.PutAsync("/b", Bytes.Of("2"));
        }
        string log = Path.Combine(_dir.Path, "store.log");
        long length = new FileInfo(log).Length;
        using (var file = new FileStream(log, FileMode.Open))
        {
            file.SetLength(length - 3); // the last record lost its last bytes in a crash
        }
        await using (var store = Open())
        {
            Assert.NotNull(await store.GetAsync("/a"));
            Assert.Null(await store.GetAsync("/b"));
            Assert.Equal(1, store.Revision);
            await store.PutAsync("/c", Bytes.Of("3"));
        }
        await File.AppendAllTextAsync(log, "garbage that is not a frame", TestContext.Current.CancellationToken);
        await using (var store = Open())
        {
            Assert.NotNull(await store.GetAsync("/c"));
            Assert.Equal(2, store.Revision);
        }
    }

    [Fact]
    public async Task A_flipped_bit_in_the_last_record_fails_its_checksum_and_is_dropped()
    {
        await using (var store = Open())
        {
            await store.PutAsync("/a", Bytes.Of("1"));
            await store.PutAsync("/b", Bytes.Of("2"));
        }
        string log = Path.Combine(_dir.Path, "store.log");
        var bytes = await File.ReadAllBytesAsync(log, TestContext.Current.CancellationToken);
        bytes[^1] ^= 0x40;
        await File.WriteAllBytesAsync(log, bytes, TestContext.Current.CancellationToken);
        await using var reopened = Open();
        Assert.Equal(1, reopened.Revision);
        Assert.Null(await reopened.GetAsync("/b"));
    }

    [Fact]
    public async Task The_log_is_compacted_into_a_snapshot_and_reopen_reads_both()
    {
        await using (var store = Open(new EmbeddedClusterStoreOptions { CompactLogBytes = 512 }))
        {
            for (int i = 0; i < 50; i++)
            {
                await store.PutAsync($"/k/{i:D3}", new byte[40]);
            }
            await store.DeleteAsync("/k/000");
        }
        Assert.True(File.Exists(Path.Combine(_dir.Path, "store.snapshot")));
        Assert.True(new FileInfo(Path.Combine(_dir.Path, "store.log")).Length < 1024);
        await using (var store = Open())
        {
            Assert.Equal(51, store.Revision);
            var range = await store.RangeAsync("/k/");
            Assert.Equal(49, range.Items.Count);
            Assert.Equal("/k/001", range.Items[0].Key);
        }
    }

    [Fact]
    public async Task A_file_from_something_else_is_refused_with_a_reason()
    {
        Directory.CreateDirectory(_dir.Path);
        await File.WriteAllTextAsync(Path.Combine(_dir.Path, "store.log"), "this is not a cairn log at all", TestContext.Current.CancellationToken);
        var error = Assert.Throws<InvalidDataException>(() => Open());
        Assert.Contains("not a Cairn cluster store file", error.Message, StringComparison.Ordinal);
    }
}

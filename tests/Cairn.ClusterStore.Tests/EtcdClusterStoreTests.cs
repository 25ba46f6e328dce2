using System.Diagnostics;

namespace Cairn.ClusterStore.Tests;

/// <summary>What only a remote store has to get right: a server that goes away and comes back, endpoints that do not answer.</summary>
public sealed class EtcdClusterStoreTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    /// <summary>Quick to give up, so "fails fast" is measured against small numbers.</summary>
    private static readonly EtcdClusterStoreOptions Impatient = new()
    {
        ConnectTimeout = TimeSpan.FromSeconds(1),
        RequestTimeout = TimeSpan.FromSeconds(2),
    };

    [Fact]
    public async Task A_watch_resumes_across_an_etcd_restart_with_no_event_lost()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var watcherStore = new EtcdClusterStore([etcd.ClientUrl], Impatient);
        await using var writer = ClusterStoreFactory.Open(etcd.Spec);
        var range = await watcherStore.RangeAsync("/w/");
        using var cts = new CancellationTokenSource(Deadline);
        await using var e = watcherStore.WatchAsync("/w/", range.Revision + 1, cts.Token).GetAsyncEnumerator(cts.Token);

        var expected = new List<(WatchEventType, string)> { (WatchEventType.Put, "/w/before") };
        await writer.PutAsync("/w/before", Bytes.Of("1"));
        Assert.True(await e.MoveNextAsync());
        var seen = new List<WatchEvent> { e.Current };
        var next = e.MoveNextAsync().AsTask(); // parked on the stream when etcd dies

        await etcd.StopAsync();
        await etcd.StartAgainAsync();
        // Written as soon as etcd is back, while the watcher is still in its reconnect backoff.
        for (int i = 0; i < 5; i++)
        {
            await writer.PutAsync($"/w/after{i}", Bytes.Of("2"));
            expected.Add((WatchEventType.Put, $"/w/after{i}"));
        }
        await writer.DeleteAsync("/w/before");
        expected.Add((WatchEventType.Delete, "/w/before"));

        Assert.True(await next);
        seen.Add(e.Current);
        while (seen.Count < expected.Count)
        {
            Assert.True(await e.MoveNextAsync());
            seen.Add(e.Current);
        }
        Assert.Equal(expected, seen.Select(s => (s.Type, s.Kv.Key)));
        Assert.Equal(seen.Select(s => s.Revision).Order(), seen.Select(s => s.Revision));
        Assert.True(watcherStore.WatchResumptions >= 1, "the watch never had to reconnect, so the test proved nothing");
    }

    [Fact]
    public async Task A_watch_whose_resume_point_was_compacted_while_it_was_cut_off_says_so()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = new EtcdClusterStore([etcd.ClientUrl]);
        long first = await store.PutAsync("/c/a", Bytes.Of("1"));
        using var cts = new CancellationTokenSource(Deadline);
        await using var e = store.WatchAsync("/c/", first, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await e.MoveNextAsync());
        store.AbortWatchStreams(); // cut off; it reconnects at its next MoveNextAsync
        await store.PutAsync("/c/b", Bytes.Of("2"));
        long last = await store.PutAsync("/c/c", Bytes.Of("3"));
        await store.CompactAsync(last); // the writes it missed are gone from etcd's history
        var error = await Assert.ThrowsAsync<RevisionCompactedException>(async () => await e.MoveNextAsync());
        Assert.Equal(last, error.OldestAvailableRevision);
        Assert.Contains($"revision {first + 1} has been compacted", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task In_a_three_member_cluster_calls_and_watches_fail_over_when_a_member_dies()
    {
        var members = await EtcdServer.StartClusterAsync(3);
        try
        {
            // The watcher prefers a follower, so killing it breaks the watch without costing the cluster its leader.
            var leaderFlags = await Task.WhenAll(members.Select(m => m.IsLeaderAsync()));
            var victim = members[Array.IndexOf(leaderFlags, false)];
            var order = members.OrderBy(m => m == victim ? 0 : 1).ToList();
            await using var watcherStore = new EtcdClusterStore([.. order.Select(m => m.ClientUrl)], Impatient);
            await using var writer = new EtcdClusterStore([.. members.Where(m => m != victim).Select(m => m.ClientUrl)], Impatient);

            long r1 = await writer.PutAsync("/f/a", Bytes.Of("1"));
            using var cts = new CancellationTokenSource(Deadline);
            await using var e = watcherStore.WatchAsync("/f/", r1, cts.Token).GetAsyncEnumerator(cts.Token);
            Assert.True(await e.MoveNextAsync());
            var seen = new List<long> { e.Current.Revision };
            var next = e.MoveNextAsync().AsTask(); // parked on the victim's stream

            await victim.StopAsync();
            var expected = new List<long> { r1 };
            for (int i = 0; i < 5; i++)
            {
                expected.Add(await writer.PutAsync($"/f/{i}", Bytes.Of("x")));
            }
            Assert.True(await next);
            seen.Add(e.Current.Revision);
            while (seen.Count < expected.Count)
            {
                Assert.True(await e.MoveNextAsync());
                seen.Add(e.Current.Revision);
            }
            Assert.Equal(expected, seen);
            Assert.True(watcherStore.WatchResumptions >= 1);
            // Plain calls skip the dead member too.
            Assert.Equal("x", (await watcherStore.GetAsync("/f/4"))!.Text());
            Assert.True(await watcherStore.PutAsync("/f/after", Bytes.Of("y")) > expected[^1]);
        }
        finally
        {
            foreach (var member in members)
            {
                await member.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Calls_fail_fast_while_etcd_is_down_and_work_again_when_it_returns()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = new EtcdClusterStore([etcd.ClientUrl], Impatient);
        long written = await store.PutAsync("/k", Bytes.Of("1"));

        await etcd.StopAsync();
        var clock = Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await store.GetAsync("/k"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Contains(etcd.ClientUrl.ToString(), error.Message, StringComparison.Ordinal);
        Assert.False(error.OutcomeUnknown);
        // A write that never reached a server did not happen, and says so by not claiming an unknown outcome.
        var writeError = await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await store.PutAsync("/k", Bytes.Of("2")));
        Assert.False(writeError.OutcomeUnknown);
        await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await store.GrantLeaseAsync(TimeSpan.FromSeconds(5)));

        await etcd.StartAgainAsync();
        var kv = await store.GetAsync("/k");
        Assert.NotNull(kv);
        Assert.Equal(("1", written), (kv.Text(), kv.ModRevision)); // etcd's WAL kept the acknowledged write
        Assert.True(await store.PutAsync("/k", Bytes.Of("3")) > written);
    }

    [Fact]
    public async Task No_endpoint_answering_fails_fast_naming_every_endpoint()
    {
        int a = EtcdServer.FreePort(), b = EtcdServer.FreePort();
        await using var store = ClusterStoreFactory.Open($"etcd://127.0.0.1:{a},127.0.0.1:{b}", etcd: Impatient);
        var clock = Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await store.RangeAsync("/"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Contains($"127.0.0.1:{a}", error.Message, StringComparison.Ordinal);
        Assert.Contains($"127.0.0.1:{b}", error.Message, StringComparison.Ordinal);
        Assert.Equal(2, error.Endpoints.Count);
    }

    [Fact]
    public async Task An_endpoint_that_accepts_but_never_answers_times_out_instead_of_hanging()
    {
        using var silent = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        silent.Start(); // the kernel completes connects; nobody ever reads or answers
        int port = ((System.Net.IPEndPoint)silent.LocalEndpoint).Port;
        await using var store = new EtcdClusterStore([new Uri($"http://127.0.0.1:{port}")], new EtcdClusterStoreOptions { RequestTimeout = TimeSpan.FromSeconds(1) });
        var clock = Stopwatch.StartNew();
        await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await store.GetAsync("/k"));
        var write = await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await store.PutAsync("/k", Bytes.Of("1")));
        Assert.True(write.OutcomeUnknown); // the request went out; whether it applied is unknown
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await using var quick = new EtcdClusterStore([new Uri($"http://127.0.0.1:{port}")],
            new EtcdClusterStoreOptions { RequestTimeout = TimeSpan.FromSeconds(1), WatchReconnectTimeout = TimeSpan.FromSeconds(1) });
        await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () =>
        {
            await foreach (var _ in quick.WatchAsync("/", 1, cts.Token))
            {
            }
        });
    }

    [Fact]
    public async Task A_dead_endpoint_fails_over_to_a_live_one_for_calls_and_watches()
    {
        await using var etcd = await EtcdServer.StartAsync();
        int dead = EtcdServer.FreePort();
        await using var store = ClusterStoreFactory.Open($"etcd://127.0.0.1:{dead},127.0.0.1:{etcd.ClientPort}", etcd: Impatient);
        long r = await store.PutAsync("/k", Bytes.Of("v"));
        Assert.Equal("v", (await store.GetAsync("/k"))!.Text());
        using var cts = new CancellationTokenSource(Deadline);
        await using var e = store.WatchAsync("/k", r, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await e.MoveNextAsync());
        Assert.Equal(r, e.Current.Revision);
    }

    [Fact]
    public async Task A_watch_that_cannot_reconnect_gives_up_with_the_unavailable_error()
    {
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = new EtcdClusterStore([etcd.ClientUrl],
            new EtcdClusterStoreOptions { ConnectTimeout = TimeSpan.FromSeconds(1), RequestTimeout = TimeSpan.FromSeconds(1), WatchReconnectTimeout = TimeSpan.FromSeconds(1) });
        using var cts = new CancellationTokenSource(Deadline);
        long r = await store.PutAsync("/x", Bytes.Of("1"));
        await using var e = store.WatchAsync("/", r, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await e.MoveNextAsync());
        await etcd.StopAsync();
        var clock = Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<ClusterStoreUnavailableException>(async () => await e.MoveNextAsync());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(8), $"took {clock.Elapsed}");
        Assert.Contains("resuming at revision", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_from_zero_on_a_client_that_has_seen_nothing_starts_at_the_first_move_next()
    {
        // The documented limit of "from now" without a round trip: a fresh client has no revision to pin at the call.
        await using var etcd = await EtcdServer.StartAsync();
        await using var store = new EtcdClusterStore([etcd.ClientUrl]);
        await using var other = new EtcdClusterStore([etcd.ClientUrl]);
        using var cts = new CancellationTokenSource(Deadline);
        await using var e = store.WatchAsync("/", 0, cts.Token).GetAsyncEnumerator(cts.Token);
        await other.PutAsync("/early", Bytes.Of("1")); // after the call, before the first MoveNextAsync: not seen
        var next = e.MoveNextAsync().AsTask();
        // Write until the watch, created some time after the first MoveNextAsync, reports one of these writes:
        // no fixed pause, so a slow machine only takes more rounds.
        var late = new HashSet<long>();
        while (!next.IsCompleted)
        {
            late.Add(await other.PutAsync("/late", Bytes.Of("2")));
            await Task.WhenAny(next, Task.Delay(100, cts.Token));
        }
        Assert.True(await next);
        Assert.Equal("/late", e.Current.Kv.Key);
        Assert.Contains(e.Current.Revision, late);
    }

    [Fact]
    public async Task Disposing_the_store_ends_its_watches()
    {
        await using var etcd = await EtcdServer.StartAsync();
        var store = new EtcdClusterStore([etcd.ClientUrl]);
        using var cts = new CancellationTokenSource(Deadline);
        var watching = Collect(store.WatchAsync("/", 0, cts.Token));
        await Task.Delay(200);
        await store.DisposeAsync();
        Assert.Empty(await watching);
        Assert.False(cts.IsCancellationRequested);
    }

    [Fact]
    public async Task Disposing_the_store_ends_a_watch_that_is_still_trying_to_reconnect()
    {
        await using var store = new EtcdClusterStore([new Uri($"http://127.0.0.1:{EtcdServer.FreePort()}")],
            new EtcdClusterStoreOptions { WatchReconnectTimeout = TimeSpan.FromMinutes(5) });
        using var cts = new CancellationTokenSource(Deadline);
        var watching = Collect(store.WatchAsync("/", 1, cts.Token));
        await Task.Delay(300);
        await store.DisposeAsync();
        Assert.Empty(await watching);
        Assert.False(cts.IsCancellationRequested);
    }

    [Theory]
    [InlineData("etcd://h1:2379", "http://h1:2379/")]
    [InlineData("etcd://h1:2379,h2:2380", "http://h1:2379/ http://h2:2380/")]
    [InlineData("etcd://h1", "http://h1:2379/")]
    [InlineData("etcd:// h1:1 , ,h2:2/", "http://h1:1/ http://h2:2/")]
    [InlineData("etcd://[::1]:2379", "http://[::1]:2379/")]
    [InlineData("etcd://https://secure:2379", "https://secure:2379/")]
    [InlineData("ETCD://h1:1,h1:1", "http://h1:1/")]
    public void Etcd_specs_parse_into_endpoints(string spec, string expected)
    {
        Assert.Equal(expected.Split(' '), ClusterStoreFactory.ParseEtcdEndpoints(spec).Select(u => u.ToString()));
    }

    [Theory]
    [InlineData("etcd://")]
    [InlineData("etcd://,")]
    [InlineData("etcd://h1:notaport")]
    [InlineData("etcd://ftp://h1:1")]
    [InlineData("/var/lib/cairn")]
    public void Bad_etcd_specs_are_refused_with_a_reason(string spec)
    {
        var error = Assert.Throws<FormatException>(() => ClusterStoreFactory.ParseEtcdEndpoints(spec));
        Assert.Contains("etcd", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_factory_opens_the_embedded_store_for_a_directory_and_etcd_for_a_url()
    {
        using var dir = new TempDir();
        await using (var embedded = ClusterStoreFactory.Open(dir.Path))
        {
            Assert.IsType<EmbeddedClusterStore>(embedded);
            await embedded.PutAsync("/a", Bytes.Of("1"));
        }
        await using var etcd = ClusterStoreFactory.Open("etcd://127.0.0.1:1");
        Assert.Equal([new Uri("http://127.0.0.1:1")], Assert.IsType<EtcdClusterStore>(etcd).Endpoints);
    }

    private static async Task<List<WatchEvent>> Collect(IAsyncEnumerable<WatchEvent> stream)
    {
        var events = new List<WatchEvent>();
        await foreach (var e in stream)
        {
            events.Add(e);
        }
        return events;
    }
}

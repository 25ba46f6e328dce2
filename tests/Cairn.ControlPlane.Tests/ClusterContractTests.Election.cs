using Cairn.ClusterStore;
using Cairn.Testing;

namespace Cairn.ControlPlane.Tests;

/// <summary>Controller election on both stores: at most one leader, a dead leader replaced within two lease periods.</summary>
public abstract partial class ClusterContractTests
{
    private async Task<ControllerElection> Candidate(string name)
    {
        var election = new ControllerElection(await ClientAsync(), name, options: new ElectionOptions { LeaseTtl = Ttl, RetryDelay = TimeSpan.FromMilliseconds(100) });
        _cleanup.Add(election);
        election.Start();
        return election;
    }

    private static async Task<ControllerElection> SoleLeaderAsync(IReadOnlyList<ControllerElection> candidates, TimeSpan deadline, IClusterStore store)
    {
        ControllerElection? leader = null;
        await Eventually.HoldsAsync(async () =>
        {
            var leaders = candidates.Where(c => c.IsLeader).ToList();
            var record = await ClusterService.GetLeaderAsync(store);
            leader = leaders.Count == 1 && record?.Node == leaders[0].Candidate ? leaders[0] : null;
            return leader is not null;
        }, deadline, "exactly one leader, named by the leader key");
        return leader!;
    }

    [Fact]
    public async Task Exactly_one_of_three_candidates_leads_and_another_takes_over_within_two_lease_periods_when_it_dies()
    {
        var candidates = new[] { await Candidate("a"), await Candidate("b"), await Candidate("c") };
        var store = await ClientAsync();
        var first = await SoleLeaderAsync(candidates, Deadline, store);
        // Followers learn the leader by reading the key after losing their campaign, a moment after it won.
        await Eventually.HoldsAsync(() => candidates.All(c => c.Leader == first.Candidate), Deadline, "every candidate names the leader");

        long firstTerm = first.Term;
        Assert.Equal((await store.GetAsync(ClusterKeys.ControllerLeader))!.ModRevision, firstTerm);
        var died = System.Diagnostics.Stopwatch.StartNew();
        await first.AbandonAsync(); // its lease is neither renewed nor revoked
        var rest = candidates.Where(c => c != first).ToList();
        var second = await SoleLeaderAsync(rest, 2 * Ttl + TimeSpan.FromMilliseconds(500), store);
        var takeover = died.Elapsed;
        Assert.NotEqual(first.Candidate, second.Candidate);
        // The old leader's fencing token no longer holds; the new one's does.
        var fenced = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs(ClusterKeys.ControllerLeader, firstTerm)).Then(TxnOp.Put("/cairn/test-fenced", "x"u8.ToArray())));
        Assert.False(fenced.Succeeded);
        var current = await store.CommitAsync(Transaction.If(Compare.ModRevisionIs(ClusterKeys.ControllerLeader, second.Term)).Then(TxnOp.Put("/cairn/test-fenced", "y"u8.ToArray())));
        Assert.True(current.Succeeded);
        Assert.True(takeover < 2 * Ttl + TimeSpan.FromMilliseconds(500), $"takeover took {takeover}");
        Assert.Equal(second.Candidate, (await ClusterService.GetLeaderAsync(store))!.Node);
    }

    [Fact]
    public async Task A_leader_whose_lease_is_revoked_steps_down_and_exactly_one_leads_again()
    {
        var candidates = new[] { await Candidate("a"), await Candidate("b"), await Candidate("c") };
        var store = await ClientAsync();
        var first = await SoleLeaderAsync(candidates, Deadline, store);
        long firstLease = first.LeaseId;

        Assert.True(await store.RevokeLeaseAsync(firstLease));
        await Eventually.HoldsAsync(() => candidates.All(c => c.LeaseId != firstLease || !c.IsLeader), Deadline, "the old leader steps down");
        var next = await SoleLeaderAsync(candidates, Deadline, store);
        Assert.NotEqual(firstLease, next.LeaseId);
        Assert.Single(candidates, c => c.IsLeader);
    }

    [Fact]
    public async Task A_resigning_leader_hands_over_without_waiting_for_expiry_and_the_lead_callback_follows_leadership()
    {
        int leading = 0;
        var store = await ClientAsync();
        var a = new ControllerElection(store, "a", async ct =>
        {
            Interlocked.Increment(ref leading);
            try
            {
                await Task.Delay(Timeout.Infinite, ct);
            }
            finally
            {
                Interlocked.Decrement(ref leading);
            }
        }, new ElectionOptions { LeaseTtl = TimeSpan.FromSeconds(30) });
        a.Start();
        await Eventually.HoldsAsync(() => a.IsLeader && Volatile.Read(ref leading) == 1, Deadline, "a leads and its controller runs");
        var b = await Candidate("b");

        var resigned = System.Diagnostics.Stopwatch.StartNew();
        await a.DisposeAsync();
        Assert.Equal(0, Volatile.Read(ref leading));
        await Eventually.HoldsAsync(() => b.IsLeader, Deadline, "b takes over");
        Assert.True(resigned.Elapsed < TimeSpan.FromSeconds(10), "b waited for a's 30 s lease instead of the resignation");
    }
}

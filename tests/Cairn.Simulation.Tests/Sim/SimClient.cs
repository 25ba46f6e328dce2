namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// A host using the volume. It finds the owner from the store (as an attach through the API would), keeps talking to
/// that node until a request fails, then looks again and retries the same operation on whoever owns it now. Writers
/// each own a disjoint set of blocks and write each block one version at a time (never two in flight on one block),
/// so "newer" is well defined per block; readers read any block. Version numbers are unique per block.
/// </summary>
internal sealed class SimClient(SimCluster cluster, Checker checker, int id, IReadOnlyList<int> ownBlocks, long[] nextVersion)
{
    /// <summary>
    /// Every path in the system answers within bounded time (links and store calls time out), so a request that is
    /// still unanswered after this long is a liveness bug. Clients do not time out sooner on purpose: a client that
    /// resubmits while its first attempt is still running overlaps its own writes, which no storage system orders.
    /// </summary>
    private const long HungUs = 2_000_000;
    private string? _owner;

    /// <summary>A host that keeps talking to this node whatever happens (scenario tests: a host still attached to a deposed owner).</summary>
    public string? PinnedTo { get; init; }

    /// <summary>Issues operations until <paramref name="untilUs"/>; each one is retried until acknowledged or <paramref name="giveUpUs"/>.</summary>
    public async Task RunAsync(long untilUs, long giveUpUs)
    {
        var sim = cluster.Sim;
        while (sim.NowUs < untilUs)
        {
            await ExecuteAsync(Next(), giveUpUs);
            await sim.Delay(sim.Rng.NextInt64(0, 2_000));
        }
    }

    /// <summary>Runs one operation to completion (retrying across failovers); false when it never succeeded by <paramref name="giveUpUs"/>.</summary>
    public async Task<ClientResult> ExecuteAsync(ClientOp op, long giveUpUs)
    {
        var sim = cluster.Sim;
        checker.Issued(op);
        var last = ClientResult.Fail("never tried");
        while (sim.NowUs < giveUpUs)
        {
            _owner ??= PinnedTo ?? cluster.Store.Set.Owner;
            long issuedUs = sim.NowUs;
            sim.Trace($"{op} -> {_owner}");
            last = await WithTimeout(cluster.Nodes[_owner].SubmitAsync(op), op, _owner);
            if (last.Ok)
            {
                if (op.Kind == OpKind.Read)
                {
                    checker.ReadReturned(op, last.Data!, issuedUs, $"read from {_owner}");
                }
                return last;
            }
            sim.Trace($"{op} failed on {_owner}: {last.Error}");
            _owner = null;
            await sim.Delay(sim.Rng.NextInt64(1_000, 10_000));
        }
        return last;
    }

    private ClientOp Next()
    {
        var rng = cluster.Sim.Rng;
        if (ownBlocks.Count == 0)
        {
            return new ClientOp(OpKind.Read, rng.Next(cluster.Options.Blocks), 0, false, id);
        }
        int block = ownBlocks[rng.Next(ownBlocks.Count)];
        int dice = rng.Next(100);
        var kind = dice switch
        {
            < 70 => OpKind.Write,
            < 75 => OpKind.Trim,
            < 80 => OpKind.WriteZeroes,
            < 90 => OpKind.Flush,
            _ => OpKind.Read,
        };
        long version = kind is OpKind.Write or OpKind.Trim or OpKind.WriteZeroes ? ++nextVersion[block] : 0;
        return new ClientOp(kind, kind == OpKind.Flush ? 0 : block, version, kind != OpKind.Flush && rng.Next(5) == 0, id);
    }

    /// <summary>A watchdog, not a timeout: the request keeps its chance to answer, but one that hangs is reported.
    /// (No Task.WhenAny: its internal continuation would hop to the thread pool and leave the simulation.)</summary>
    private Task<ClientResult> WithTimeout(Task<ClientResult> request, ClientOp op, string node)
    {
        cluster.Sim.At(HungUs, () =>
        {
            if (!request.IsCompleted)
            {
                checker.Violate($"liveness: {op} on {node} got no answer in {HungUs} µs");
            }
        });
        return request;
    }
}

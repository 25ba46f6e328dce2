using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>What one seed did and found.</summary>
internal sealed record SimResult(int Seed, IReadOnlyList<string> Violations, ulong TraceHash, string Summary)
{
    public bool Passed => Violations.Count == 0;
}

/// <summary>
/// One seeded run: build the cluster, run the workload under the seed's faults, heal everything, let the controller
/// and owners settle, read every block through the final owner, and report what the checker found.
/// </summary>
internal static class SimRun
{
    public static SimResult Run(int seed, SimOptions? options = null, Action<string>? trace = null, bool checkStoreTransitions = true)
    {
        options ??= SimOptions.FromSeed(seed);
        var sim = new SimScheduler(seed, trace);
        sim.Trace($"seed {seed}: {options}");
        var cluster = new SimCluster(sim, options);
        var checker = new Checker(cluster) { CheckStoreTransitions = checkStoreTransitions };
        long[] nextVersion = new long[options.Blocks];
        long giveUpUs = options.WorkloadUs + options.SettleUs / 2;
        for (int c = 0; c < options.Writers + options.Readers; c++)
        {
            var own = c < options.Writers ? Enumerable.Range(0, options.Blocks).Where(b => b % options.Writers == c).ToList() : [];
            var client = new SimClient(cluster, checker, c, own, nextVersion);
            cluster.Spawn(() => client.RunAsync(options.WorkloadUs, giveUpUs));
        }
        cluster.Spawn(new Nemesis(cluster).RunAsync);
        sim.RunUntil(options.WorkloadUs);
        cluster.HealAll();
        sim.RunUntil(options.WorkloadUs + options.SettleUs);
        bool audited = false;
        var auditor = new SimClient(cluster, checker, 99, [], nextVersion);
        cluster.Spawn(async () =>
        {
            await AuditAsync(cluster, checker, auditor, sim.NowUs + options.SettleUs);
            audited = true;
        });
        sim.RunUntil(options.WorkloadUs + 2 * options.SettleUs);
        if (!audited)
        {
            checker.Violate("liveness: the final reads did not finish");
        }
        var violations = checker.Violations.Concat(cluster.Errors.Select(e => $"simulation error: {e}")).ToList();
        string summary = $"seed {seed}: {options.Replicas} replicas, {checker.AcknowledgedWrites} writes acknowledged, {checker.Reads} reads, " +
            $"{checker.Forgiven} unflushed writes forgivably lost, final epoch {cluster.Store.Set.Epoch} owner {cluster.Store.Set.Owner}, " +
            $"{sim.Events} events, trace hash {sim.TraceHash:x16}";
        sim.Trace(summary);
        return new SimResult(seed, violations, sim.TraceHash, summary);
    }

    /// <summary>After healing: every block read once through whoever owns the volume now.</summary>
    private static async Task AuditAsync(SimCluster cluster, Checker checker, SimClient auditor, long giveUpUs)
    {
        cluster.Sim.Trace("-- final audit");
        for (int block = 0; block < cluster.Options.Blocks; block++)
        {
            var result = await auditor.ExecuteAsync(new ClientOp(OpKind.Read, block, 0, false, 99), giveUpUs);
            if (!result.Ok)
            {
                checker.Violate($"liveness: after healing, block {block} could not be read: {result.Error}");
            }
        }
        AuditInSyncDrives(cluster, checker);
    }

    /// <summary>
    /// Invariant 1 asks more than the owner's answers: every replica that may be promoted next must hold every
    /// acknowledged write. Its drive is read directly, cache first, under the same freshness rule as a read. Those are
    /// the in-sync replicas still on the boot they joined at: one whose node restarted since is in sync in name only
    /// (its owner drops it on its next write) and <see cref="ReplicaSet.FailOver"/> never promotes it.
    /// </summary>
    private static void AuditInSyncDrives(SimCluster cluster, Checker checker)
    {
        byte[] zeros = new byte[SimDisk.BlockBytes];
        foreach (var member in cluster.Store.Set.InSync.Where(m => ReplicaSet.IsIntact(m, cluster.Store.LiveBootOf)))
        {
            var disk = cluster.Nodes[member.Node].Disk;
            for (int block = 0; block < cluster.Options.Blocks; block++)
            {
                checker.ReadReturned(new ClientOp(OpKind.Read, block, 0, false, 98), disk.Peek(block) ?? zeros, cluster.Sim.NowUs,
                    $"the drive of in-sync replica {member.Node}");
            }
        }
    }
}

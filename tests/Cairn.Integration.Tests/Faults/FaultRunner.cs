using System.Diagnostics;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// Runs one <see cref="FaultPlan"/> against a <see cref="NetnsCluster"/>: create the volume, write it (fio, or the
/// ledger writer when the owner itself is hit), inject the fault once the plan's share of writes is acknowledged,
/// let the writes end, recover (restart, heal, wait for failover), then read every acknowledged block back from
/// whichever node serves the volume now. A replicated volume must then get back to every replica in sync (rebuild
/// and resync under faults), and after the delete every pool must be healthy and empty, so each run starts on a whole
/// cluster. A failure names the seed and how to replay it, and keeps the nodes' logs.
/// </summary>
internal sealed partial class FaultRunner(NetnsCluster cluster, ClusterApi api, Action<string> log)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);

    /// <summary>How long a replicated volume may take to have every replica in sync again once the fault is undone:
    /// the owner retries a rebuild every few seconds, and copies at most 32 MiB, but the machine may be loaded.</summary>
    private static readonly TimeSpan RedundancyDeadline = TimeSpan.FromSeconds(180);

    private static readonly HashSet<FaultKind> OwnerAtRisk =
        [FaultKind.KillOwner, FaultKind.IsolateOwner, FaultKind.CutOwnerFromCluster, FaultKind.CutOwnerFromEtcd];

    public async Task RunAsync(FaultPlan plan)
    {
        try
        {
            await RunAndCleanUpAsync(plan);
        }
        catch (Exception)
        {
            KeepLogs(plan);
            throw;
        }
    }

    private async Task RunAndCleanUpAsync(FaultPlan plan)
    {
        log($"fault run {plan} (replay: CAIRN_FAULT_SEED={plan.Seed})");
        var clock = Stopwatch.StartNew();
        await WaitAllUpAsync();
        await api.CreateVolumeOrThrowAsync(cluster.Nodes[0], plan.VolumeName, plan.VolumeBytes, plan.Replicas, node: plan.PinnedNode > 0 ? $"n{plan.PinnedNode}" : null);
        bool failed = true;
        try
        {
            var before = await api.WaitForLocationAsync(plan.VolumeName, Deadline);
            log($"  created {plan.VolumeName}, served by {before.Node}");
            var (acknowledged, fio) = await WriteThroughFaultAsync(plan, before);
            var (after, problems) = await VerifyAtOwnerAsync(plan, acknowledged);
            if (problems.Count == 0 && fio is { CompletedEveryWrite: true })
            {
                var verify = await fio.VerifyWithFioAsync(after.Uri);
                if (verify.ExitCode != 0)
                {
                    problems.Add($"fio --verify_only failed on {after.Node}:\n{verify.Stdout}\n{verify.Stderr}");
                }
            }
            if (problems.Count > 0)
            {
                throw new Xunit.Sdk.XunitException($"fault run {plan} lost acknowledged writes ({problems.Count} problems):\n  " +
                    string.Join("\n  ", problems.Take(20)) + $"\nreplay: CAIRN_FAULT_SEED={plan.Seed}");
            }
            log($"  seed {plan.Seed}: {acknowledged.Count}/{plan.VolumeBytes / plan.BlockBytes} writes acknowledged, all verified on {after.Node} " +
                $"(owner before: {before.Node}{(fio is { CompletedEveryWrite: true } ? ", fio --verify_only passed" : "")})");
            if (plan.Replicas > 1)
            {
                await WaitForFullRedundancyAsync(plan);
            }
            failed = false;
        }
        finally
        {
            try
            {
                await RecoverEverythingAsync();
                await DeleteAsync(plan.VolumeName);
            }
            catch (Exception e) when (failed)
            {
                log($"  after that failure, recovering the cluster failed too: {e.Message}"); // the run's own failure is the one to report
            }
        }
        await WaitUntilCleanAsync(plan);
        log($"  seed {plan.Seed} passed in {clock.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>
    /// Verifies on the node that serves the volume now. Right after a partition heals, the old owner may still answer
    /// that it owns the volume until its view catches up — and refuse IO (EIO), as a fenced owner must — and a new owner
    /// may be named a moment before it exports the volume; so an IO error or a refused export means "ask again", until
    /// the deadline.
    /// </summary>
    private async Task<(VolumeLocation, List<string>)> VerifyAtOwnerAsync(FaultPlan plan, AcknowledgedWrites acknowledged)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (true)
        {
            var location = await api.WaitForLocationAsync(plan.VolumeName, Deadline);
            try
            {
                return (location, await acknowledged.VerifyAsync(location, plan.VolumeBytes));
            }
            catch (Exception e) when (e is IOException or InvalidDataException && DateTime.UtcNow < deadline)
            {
                log($"  verify on {location.Node} refused ({e.Message}); asking again where the volume is served");
                await Task.Delay(TimeSpan.FromMilliseconds(500));
            }
        }
    }

    /// <summary>Writes, injects the fault at the plan's point, waits for the writes to end, then undoes the fault.</summary>
    private async Task<(AcknowledgedWrites, FioWriter?)> WriteThroughFaultAsync(FaultPlan plan, VolumeLocation location)
    {
        var owner = cluster[location.Node];
        await PrepareAsync(plan, owner);
        FioWriter? fio = null;
        LedgerWriter? ledger = null;
        Task<AcknowledgedWrites> writing;
        Func<Task<double>> progress;
        if (OwnerAtRisk.Contains(plan.Fault))
        {
            ledger = new LedgerWriter(plan, location);
            writing = ledger.RunAsync().ContinueWith(_ => ledger.Acknowledged, TaskScheduler.Default);
            progress = () => Task.FromResult((double)ledger.Acknowledged.Count / ledger.TotalBlocks);
        }
        else
        {
            fio = new FioWriter(plan, location.Uri, cluster.WorkDirectory);
            writing = fio.RunAsync(Deadline * 2);
            progress = async () => (double)await api.AllocatedBytesAsync(owner, plan.VolumeName) / plan.VolumeBytes;
        }
        await Eventually.HoldsAsync(async () => writing.IsCompleted || await progress() >= plan.FaultAtFraction, Deadline,
            $"seed {plan.Seed}: {plan.FaultAtFraction:P0} of the writes are acknowledged");
        double atFault = await progress();
        var recover = await InjectAsync(plan, owner);
        if (ledger is not null)
        {
            // Once another node serves the volume, nothing the old one could still acknowledge would count: end the
            // writes rather than wait out a silent owner's request deadline.
            await Task.WhenAny(writing, WaitForNewOwnerAsync(plan, owner));
            ledger.Stop();
        }
        var acknowledged = await writing.WaitAsync(Deadline * 2);
        log($"  writes ended: {acknowledged.Count} acknowledged, {atFault:P0} before the fault" +
            (ledger is { Errors.Count: > 0 } ? $"; writer stopped: {string.Join("; ", ledger.Errors.Distinct())}" : ""));
        if (FaultPlan.ReplicaOutages.Contains(plan.Fault) && fio is { CompletedEveryWrite: false })
        {
            throw new Xunit.Sdk.XunitException($"seed {plan.Seed}: {plan.Fault} hit a replica, not the owner, yet the client saw a write fail; " +
                $"the volume must carry on degraded\n{fio.Output}\nreplay: CAIRN_FAULT_SEED={plan.Seed}");
        }
        await recover();
        return (acknowledged, fio);
    }
}

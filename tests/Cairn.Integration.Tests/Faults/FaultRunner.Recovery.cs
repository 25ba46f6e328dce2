namespace Cairn.Integration.Tests.Faults;

/// <summary>Between runs: the cluster made whole again, the volume back to full redundancy, every pool healthy and empty.</summary>
internal sealed partial class FaultRunner
{
    /// <summary>Every node sees every node Up (placement runs on the view of the node that takes the create).</summary>
    private async Task WaitAllUpAsync()
    {
        foreach (var node in cluster.Nodes)
        {
            foreach (var witness in cluster.Nodes.Where(n => n != node))
            {
                await api.WaitForStateAsync(witness, node, "Up", Deadline);
            }
        }
    }

    /// <summary>
    /// Whatever a run did, the next one starts on a whole cluster: links healed, the drive healed, every node running
    /// and Up, and every pool healthy. A pool that saw its drive fail refuses IO until reopened (after a failed fsync
    /// the page cache cannot be trusted), so its node is restarted.
    /// </summary>
    private async Task RecoverEverythingAsync()
    {
        await cluster.HealAllAsync();
        if (cluster.Drive is { Failing: true })
        {
            await RepairDriveAsync();
        }
        foreach (var node in cluster.Nodes.Where(n => !n.IsRunning))
        {
            await cluster.RestartAsync(node);
        }
        foreach (var node in cluster.Nodes)
        {
            await RestartIfPoolFailedAsync(node);
        }
        await WaitAllUpAsync();
        await WaitUntilPoolsAsync(p => p.State == "Ok", "every pool is healthy");
    }

    /// <summary>Restarts the node when its pool reports Failed (repairing the drive first when it is the faulty one).</summary>
    private async Task RestartIfPoolFailedAsync(NetnsNode node)
    {
        PoolStatus? pool = null;
        await Eventually.HoldsAsync(async () => (pool = await api.PoolAsync(node)) is not null, Deadline, $"{node.Name}'s API answers");
        if (pool!.State == "Ok")
        {
            return;
        }
        log($"  {node.Name}'s pool has failed ({pool.Fault}); restarting {node.Name} to reopen it");
        if (node == cluster.DriveNode)
        {
            await RepairDriveAsync();
        }
        else
        {
            await cluster.RestartAsync(node);
        }
    }

    /// <summary>
    /// Brings the faulty drive's node back: stopped (kill -9: the pool must recover from a crash anyway), the drive
    /// healed, its filesystem checked and mounted again (ext4 turns read-only after a failed journal write), started.
    /// </summary>
    private async Task RepairDriveAsync()
    {
        var drive = cluster.Drive!;
        var node = cluster.DriveNode!;
        await cluster.Kill9Async(node);
        drive.Heal();
        string verdict = await drive.RepairAsync();
        log($"  {node.Name} stopped, its drive healed, its filesystem {verdict}; restarting {node.Name}");
        await cluster.RestartAsync(node);
    }

    private async Task WaitUntilPoolsAsync(Func<PoolStatus, bool> condition, string what)
    {
        var last = new PoolStatus?[cluster.Nodes.Count];
        try
        {
            await Eventually.HoldsAsync(async () =>
            {
                for (int i = 0; i < last.Length; i++)
                {
                    last[i] = await api.PoolAsync(cluster.Nodes[i]);
                }
                return last.All(p => p is not null && condition(p));
            }, Deadline, what);
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}; pools: {string.Join("; ", last.Select((p, i) => p?.ToString() ?? $"n{i + 1}: no answer"))}", e);
        }
    }

    /// <summary>
    /// After the fault is undone, the volume must get back to every replica in sync — the returning one resynced, a
    /// dropped one rebuilt, a deposed owner brought back as a replica — and the controller must judge it Healthy.
    /// </summary>
    private async Task WaitForFullRedundancyAsync(FaultPlan plan)
    {
        VolumeStatus? status = null;
        try
        {
            var took = await Eventually.HoldsAsync(async () =>
            {
                foreach (var node in cluster.Nodes)
                {
                    if ((status = await api.StatusAsync(node, plan.VolumeName)) is not null)
                    {
                        break;
                    }
                }
                return status is { Health: "Healthy" } && status.Replicas.Count == plan.Replicas && status.Replicas.All(r => r.State == "InSync");
            }, RedundancyDeadline, $"seed {plan.Seed}: every replica of {plan.VolumeName} in sync and the volume Healthy");
            log($"  all {plan.Replicas} replicas in sync, Healthy, {took.TotalSeconds:F1} s after the fault was undone ({status})");
        }
        catch (TimeoutException e)
        {
            throw new Xunit.Sdk.XunitException($"{e.Message}; last seen: {status?.ToString() ?? "no node answered"}\nreplay: CAIRN_FAULT_SEED={plan.Seed}");
        }
    }

    /// <summary>
    /// Deletes the volume through whichever node takes the request. A node whose view still shows a failover's old
    /// owner answers 503 (the old owner refuses to act on a volume the store gives to another node) until its view
    /// catches up: ask again.
    /// </summary>
    private async Task DeleteAsync(string volume)
    {
        string? refusal = null;
        try
        {
            await Eventually.HoldsAsync(async () =>
            {
                try
                {
                    await api.DeleteVolumeAsync(cluster.Nodes.First(n => n.IsRunning), volume);
                    return true;
                }
                catch (Exception e) when (e is InvalidOperationException or HttpRequestException or TaskCanceledException)
                {
                    refusal = e.Message;
                    return false;
                }
            }, Deadline, $"deleting {volume}");
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}; last answer: {refusal}", e);
        }
    }

    /// <summary>Deleting the volume removes every copy of it (and the run's filler): every pool is empty again, so pools never fill up over a batch.</summary>
    private Task WaitUntilCleanAsync(FaultPlan plan) =>
        WaitUntilPoolsAsync(p => p.State == "Ok" && p.Volumes == 0, $"seed {plan.Seed}: every copy of {plan.VolumeName} is deleted and every pool is empty");

    /// <summary>Waits until the owner no longer counts the replica on <paramref name="node"/> in sync: the fault really took it out.</summary>
    private async Task WaitForDropAsync(FaultPlan plan, NetnsNode owner, NetnsNode node)
    {
        VolumeStatus? status = null;
        try
        {
            var took = await Eventually.HoldsAsync(async () => (status = await api.StatusAsync(owner, plan.VolumeName)) is { } s
                && s.Replica(node.Name) is { State: not "InSync" }, Deadline, $"seed {plan.Seed}: {owner.Name} drops the replica on {node.Name}");
            var dropped = status!.Replica(node.Name)!;
            log($"  {owner.Name} dropped the replica on {node.Name} ({dropped.State}: {dropped.Reason}; epoch {status.Epoch}) {took.TotalSeconds:F1} s after the writes ended");
        }
        catch (TimeoutException e)
        {
            throw new Xunit.Sdk.XunitException($"{e.Message}; last seen: {status?.ToString() ?? "no answer"}\nreplay: CAIRN_FAULT_SEED={plan.Seed}");
        }
    }

    /// <summary>Copies every node's and etcd's log out of the cluster's work directory (deleted with the cluster) to
    /// CAIRN_TEST_LOG_DIR (scripts/test.sh sets it to .artifacts/test-logs), so a failed run can be read afterwards.</summary>
    private void KeepLogs(FaultPlan plan)
    {
        if (Environment.GetEnvironmentVariable("CAIRN_TEST_LOG_DIR") is not { Length: > 0 } root)
        {
            log($"  logs of the failed run: {cluster.WorkDirectory} (deleted with the cluster; set CAIRN_TEST_LOG_DIR to keep them)");
            return;
        }
        string dir = Path.Combine(root, "fault-runs", $"seed-{plan.Seed}");
        Directory.CreateDirectory(dir);
        foreach (var node in cluster.Nodes.Where(n => File.Exists(n.LogPath)))
        {
            File.Copy(node.LogPath, Path.Combine(dir, $"{node.Name}.log"), overwrite: true);
        }
        string etcd = Path.Combine(cluster.WorkDirectory, "etcd", "etcd.log");
        if (File.Exists(etcd))
        {
            File.Copy(etcd, Path.Combine(dir, "etcd.log"), overwrite: true);
        }
        log($"  logs of the failed run kept in {dir}");
    }
}

using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>Each fault: what is done at the fault point, and what undoes it once the writes have ended.</summary>
internal sealed partial class FaultRunner
{
    private string? _filler; // ReplicaPoolFull: the volume that fills the replica's pool, deleted when the fault is undone

    /// <summary>The node a fault on "another node" hits: the plan's bystander, or another node when that is the owner.</summary>
    private NetnsNode OtherThan(FaultPlan plan, NetnsNode owner)
    {
        var bystander = cluster[$"n{plan.Bystander}"];
        return bystander != owner ? bystander : cluster.Nodes.First(n => n != owner);
    }

    /// <summary>Before the writes: a pool that is to run full is filled so that it runs out when the plan's share of the writes is in.</summary>
    private async Task PrepareAsync(FaultPlan plan, NetnsNode owner)
    {
        _filler = null;
        if (plan.Fault == FaultKind.ReplicaPoolFull)
        {
            _filler = await FillPoolAsync(plan, OtherThan(plan, owner));
        }
    }

    private async Task<Func<Task>> InjectAsync(FaultPlan plan, NetnsNode owner)
    {
        var other = OtherThan(plan, owner);
        log($"  inject {plan.Fault} (owner {owner.Name}, other {other.Name})");
        switch (plan.Fault)
        {
            case FaultKind.KillBystander:
            case FaultKind.KillReplica:
                await cluster.Kill9Async(other);
                return async () =>
                {
                    if (plan.Fault == FaultKind.KillReplica)
                    {
                        await WaitForDropAsync(plan, owner, other);
                    }
                    await api.WaitForStateAsync(owner, other, "Down", Deadline);
                    await cluster.RestartAsync(other);
                    await api.WaitForStateAsync(owner, other, "Up", Deadline);
                };
            case FaultKind.IsolateBystander:
                await cluster.IsolateAsync(other);
                return async () =>
                {
                    await api.WaitForStateAsync(owner, other, "Down", Deadline);
                    await cluster.HealAsync(other);
                    await api.WaitForStateAsync(owner, other, "Up", Deadline);
                };
            case FaultKind.CutOwnerFromEtcdThenHeal:
                await cluster.CutFromEtcdAsync(owner);
                return async () =>
                {
                    await api.WaitForStateAsync(other, owner, "Down", Deadline);
                    await cluster.HealAsync(owner);
                    await api.WaitForStateAsync(other, owner, "Up", Deadline);
                };
            case FaultKind.KillOwner:
                await cluster.Kill9Async(owner);
                return async () =>
                {
                    await WaitForNewOwnerAsync(plan, owner);
                    await cluster.RestartAsync(owner);
                };
            case FaultKind.IsolateOwner:
                await cluster.IsolateAsync(owner);
                return async () =>
                {
                    await WaitForNewOwnerAsync(plan, owner);
                    await cluster.HealAsync(owner);
                };
            case FaultKind.CutOwnerFromCluster:
            case FaultKind.CutOwnerFromEtcd:
                await (plan.Fault == FaultKind.CutOwnerFromCluster ? cluster.CutFromClusterAsync(owner) : cluster.CutFromEtcdAsync(owner));
                return async () =>
                {
                    await WaitForNewOwnerAsync(plan, owner);
                    await AssertOldOwnerRefusesWritesAsync(plan, owner);
                    await cluster.HealAsync(owner);
                };
            case FaultKind.ReplicaDriveErrors:
                return await InjectDriveErrorsAsync(plan, owner);
            case FaultKind.ReplicaPoolFull:
                log($"  {other.Name}'s pool has {await api.PoolFreeBytesAsync(other) >> 10} KiB free: the replica there runs out of space now");
                return async () =>
                {
                    await WaitForDropAsync(plan, owner, other);
                    var pool = await api.PoolAsync(other);
                    log($"  {other.Name}'s pool after the writes: {pool}");
                    // New data may not use the last 1 % of a pool (kept for copy-on-write overwrites): full shows about 1.3 MiB free here.
                    if (pool is not { FreeBytes: < 2 << 20 })
                    {
                        throw new Xunit.Sdk.XunitException($"seed {plan.Seed}: {other.Name}'s pool never ran full ({pool}); replay: CAIRN_FAULT_SEED={plan.Seed}");
                    }
                    await api.DeleteVolumeAsync(owner, _filler!);
                };
            default:
                throw new ArgumentOutOfRangeException(nameof(plan), plan.Fault, "no such fault");
        }
    }

    /// <summary>
    /// Every IO of the faulty drive's node's pool fails until the owner has dropped that replica (the page cache hides
    /// failed writes until the pool's next sync, a second or so later). Then the drive is repaired as an operator
    /// would: the node stopped, the filesystem checked and mounted again, the node started (its pool reopened).
    /// </summary>
    private async Task<Func<Task>> InjectDriveErrorsAsync(FaultPlan plan, NetnsNode owner)
    {
        var drive = cluster.Drive ?? throw new InvalidOperationException("ReplicaDriveErrors needs a cluster with a FaultyDriveNode");
        var node = cluster.DriveNode!;
        if (node == owner)
        {
            throw new InvalidOperationException($"seed {plan.Seed}: the plan pins the owner away from the faulty drive, yet {owner.Name} owns the volume");
        }
        drive.InjectErrors();
        return async () =>
        {
            await WaitForDropAsync(plan, owner, node);
            log($"  {node.Name}'s pool after the errors: {await api.PoolAsync(node)}");
            await RepairDriveAsync();
            await api.WaitForStateAsync(owner, node, "Up", Deadline);
        };
    }

    /// <summary>After a failover some other node serves the volume.</summary>
    private async Task WaitForNewOwnerAsync(FaultPlan plan, NetnsNode old)
    {
        VolumeLocation? now = null;
        await Eventually.HoldsAsync(async () =>
        {
            foreach (var node in cluster.Nodes.Where(n => n != old && n.IsRunning))
            {
                now = await api.LocateAsync(node, plan.VolumeName);
                if (now is not null && now.Node != old.Name)
                {
                    return true;
                }
            }
            return false;
        }, Deadline, $"seed {plan.Seed}: a node other than {old.Name} takes the volume over");
        log($"  {now!.Node} took over from {old.Name}");
    }

    /// <summary>The old owner, still reachable by the client, must not acknowledge a write once the new owner took over.</summary>
    private async Task AssertOldOwnerRefusesWritesAsync(FaultPlan plan, NetnsNode old)
    {
        var block = new byte[plan.BlockBytes];
        FioBlock.Fill(block, 0, new Random(plan.Seed));
        try
        {
            using var client = await MiniNbdClient.ConnectAsync(old.Ip, NetnsNode.NbdPort, plan.VolumeName, TimeSpan.FromSeconds(20));
            client.Write(0, block);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            log($"  old owner {old.Name} refused a write after the takeover: {e.Message}");
            return;
        }
        throw new Xunit.Sdk.XunitException($"seed {plan.Seed}: old owner {old.Name} acknowledged a write after the new owner took over; replay: CAIRN_FAULT_SEED={plan.Seed}");
    }

    /// <summary>
    /// Fills the node's pool with a volume of its own, written by fio, until only what the replica there will hold at
    /// the plan's fault point is left free: the replica runs out of space right there, while the writes go on.
    /// </summary>
    private async Task<string> FillPoolAsync(FaultPlan plan, NetnsNode node)
    {
        string filler = $"{plan.VolumeName}-filler";
        const long MiB = 1 << 20;
        long leave = ((long)(plan.VolumeBytes * plan.FaultAtFraction) + MiB - 1) / MiB * MiB;
        long bytes = (await api.PoolFreeBytesAsync(node) - leave) / MiB * MiB;
        // Placement reads free space from the node's heartbeat, which shows the blocks of the last run's volume freed a
        // few seconds after the pool does: until it catches up the create is refused (503, "no pool has room").
        (System.Net.HttpStatusCode Status, string Body) created = default;
        await Eventually.HoldsAsync(async () => (created = await api.CreateVolumeAsync(node, filler, bytes, replicas: 1, node: node.Name)).Status
            != System.Net.HttpStatusCode.ServiceUnavailable, Deadline, $"placement on {node.Name} has room for a {bytes >> 20} MiB filler");
        if (created.Status != System.Net.HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"creating {filler} on {node.Name} answered {(int)created.Status}: {created.Body}");
        }
        var fill = await ToolRun.RunAsync("fio", ["--name=fill", "--ioengine=nbd", $"--uri={node.NbdUri(filler)}", "--rw=write", "--bs=1M", "--iodepth=4", $"--size={bytes}"], Deadline);
        if (fill.ExitCode != 0)
        {
            throw new InvalidOperationException($"filling {node.Name}'s pool failed:\n{fill.Stdout}\n{fill.Stderr}");
        }
        log($"  filled {node.Name}'s pool with {bytes >> 20} MiB, leaving {await api.PoolFreeBytesAsync(node) >> 20} MiB for the replica there");
        return filler;
    }
}

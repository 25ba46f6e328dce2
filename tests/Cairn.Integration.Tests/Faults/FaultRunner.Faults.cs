using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>Each fault: what is done at the fault point, and what undoes it once the writes have ended.</summary>
internal sealed partial class FaultRunner
{
    private async Task<Func<Task>> InjectAsync(FaultPlan plan, NetnsNode owner)
    {
        var bystander = cluster[$"n{plan.Bystander}"];
        var other = bystander != owner ? bystander : cluster.Nodes.First(n => n != owner); // a replica that is not the owner
        log($"  inject {plan.Fault} (owner {owner.Name}, other {other.Name})");
        switch (plan.Fault)
        {
            case FaultKind.KillBystander:
            case FaultKind.KillReplica:
                await cluster.Kill9Async(other);
                return async () =>
                {
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
                var drive = cluster.Drive ?? throw new InvalidOperationException("ReplicaDriveErrors needs a cluster with a FaultyDriveNode");
                drive.InjectErrors();
                return () =>
                {
                    drive.Heal();
                    return Task.CompletedTask;
                };
            case FaultKind.ReplicaPoolFull:
                string filler = await FillPoolAsync(plan, other);
                return () => api.DeleteVolumeAsync(owner, filler);
            default:
                throw new ArgumentOutOfRangeException(nameof(plan), plan.Fault, "no such fault");
        }
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

    /// <summary>Fills the node's pool to a few MiB of free space with a volume of its own, written by fio.</summary>
    private async Task<string> FillPoolAsync(FaultPlan plan, NetnsNode node)
    {
        string filler = $"{plan.VolumeName}-filler";
        long bytes = (await api.PoolFreeBytesAsync(node) - (4 << 20)) / (1 << 20) * (1 << 20);
        await api.CreateVolumeOrThrowAsync(node, filler, bytes, replicas: 1, node: node.Name);
        var fill = await ToolRun.RunAsync("fio", ["--name=fill", "--ioengine=nbd", $"--uri={node.NbdUri(filler)}", "--rw=write", "--bs=1M", "--iodepth=4", $"--size={bytes}"], Deadline);
        log($"  filled {node.Name}'s pool with {bytes >> 20} MiB (fio exit {fill.ExitCode})");
        return filler;
    }
}

using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane.Replication;

// The owner brings replicas that are not in sync back: a replica the controller added, or one whose node returned.
// Each rebuild runs in the background while IO goes on; the replica set records it as Rebuilding, and the rebuild's
// end admits it to the in-sync set (an epoch bump). A replica this owner dropped itself is resynced from the regions
// written since (its dirty map); any other is copied in full.
public sealed partial class OwnedReplication
{
    private readonly Dictionary<string, Rebuild> _rebuilds = new(StringComparer.Ordinal); // guarded by itself
    private readonly Dictionary<string, RebuildReport> _lastRebuilds = new(StringComparer.Ordinal); // guarded by _rebuilds
    private VolumeSpec _spec;

    private sealed class Rebuild(Task task)
    {
        public Task Task { get; set; } = task;

        public RebuildProgress Progress { get; set; }
    }

    /// <summary>Percent copied of each replica being rebuilt.</summary>
    public IReadOnlyDictionary<string, double> RebuildProgress()
    {
        lock (_rebuilds)
        {
            return _rebuilds.Where(r => !r.Value.Task.IsCompleted && r.Value.Progress.BytesTotal > 0)
                .ToDictionary(r => r.Key, r => 100.0 * r.Value.Progress.BytesDone / r.Value.Progress.BytesTotal, StringComparer.Ordinal);
        }
    }

    /// <summary>The last rebuild this owner finished for each replica: what it copied and how fast.</summary>
    public IReadOnlyDictionary<string, RebuildReport> LastRebuilds()
    {
        lock (_rebuilds)
        {
            return new Dictionary<string, RebuildReport>(_lastRebuilds, StringComparer.Ordinal);
        }
    }

    /// <summary>Acts on the volume's latest replica set: rebuilds replicas that are not in sync and whose node is reachable,
    /// and retires in-sync replicas beyond the asked-for count.</summary>
    public async Task ReconcileAsync(VolumeSpec spec)
    {
        _spec = spec;
        if (spec.Replication is not { } set || _closing.IsCancellationRequested || !string.Equals(set.Owner, _context.Node, StringComparison.Ordinal))
        {
            return;
        }
        await DropRestartedAsync(set);
        int desired = spec.Placement?.Replicas ?? set.Members.Count;
        // Surplus copies out of sync are the controller's to remove, not to bring back.
        foreach (var member in set.Members.Where(m => m.State != ReplicaState.InSync && m.Node != set.Owner).Take(Math.Max(0, desired - set.InSync.Count())))
        {
            if (_context.ReplicaEndpointOf(member.Node) is null)
            {
                continue; // its node is Down: nothing to copy to yet
            }
            lock (_rebuilds)
            {
                if (_rebuilds.TryGetValue(member.Node, out var running) && !running.Task.IsCompleted)
                {
                    continue;
                }
                var rebuild = new Rebuild(Task.CompletedTask);
                rebuild.Task = Task.Run(() => RebuildAsync(member, rebuild), CancellationToken.None);
                _rebuilds[member.Node] = rebuild;
            }
        }
        await RetireSurplusAsync(set, desired);
    }

    private async Task RebuildAsync(ReplicaMember member, Rebuild rebuild)
    {
        var stopping = _closing.Token;
        NodeChannel? channel = null;
        try
        {
            channel = await ConnectAsync(_spec, member.Node, Device.Epoch, _context, _logger, stopping, within: TimeSpan.FromSeconds(5));
            if (channel is null)
            {
                return;
            }
            // The boot that answered (its record was written before it took replicas), or a later one — but then this
            // connection is broken and the rebuild cannot finish. Recorded now, taken at admission.
            string? boot = await _context.ReadBootAsync(member.Node, stopping);
            if (boot is null)
            {
                // Its heartbeat record lapsed (a loaded or cut-off node): admitted without a boot, it could never be
                // promoted. The next reconcile tries again once the node is back in the store.
                _logger.LogInformation("volume {Volume}: not rebuilding the replica on {Node} yet: its node has no live record", _spec.Name, member.Node);
                return;
            }
            await _context.Writer.UpdateAsync(_spec.Name, current =>
                current.Replication is { } now && now.Owner == _context.Node && now.Find(member.Node) is { State: not ReplicaState.InSync } m
                    ? m.State == ReplicaState.Rebuilding && m.Boot == boot ? null : now.StartRebuild(member.Node, boot)
                    : throw new InvalidOperationException($"{member.Node} no longer needs a rebuild"), cancellationToken: stopping);
            bool delta = Device.DirtySince(member.Node) is not null && member.FailedAtEpoch != 0;
            _logger.LogInformation("volume {Volume}: rebuilding the replica on {Node} ({Kind}) while IO goes on", _spec.Name, member.Node,
                delta ? "delta: only regions written since it dropped out" : "full copy of allocated regions");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var summary = await Device.RebuildAsync(channel, delta, new SynchronousProgress(p => rebuild.Progress = p), stopping);
            var report = RebuildReport.Of(summary, clock.Elapsed, _context.Time.GetUtcNow());
            NodeChannel[] stale;
            lock (_links)
            {
                stale = [.. _links.Where(l => l.Replica == member.Node)]; // the link it was dropped over, broken since
                _links.RemoveAll(l => l.Replica == member.Node);
                _links.Add(channel);
            }
            foreach (var old in stale)
            {
                await old.DisposeAsync();
            }
            channel = null; // in the in-sync set now: kept until the volume closes
            lock (_rebuilds)
            {
                _lastRebuilds[member.Node] = report;
            }
            _logger.LogInformation(
                "volume {Volume}: rebuild of the replica on {Node} done: {Kind}, {DataBytes} bytes copied and {ErasedBytes} erased in {Seconds:F1} s, {Rate:F1} MB/s; in sync at epoch {Epoch}",
                _spec.Name, member.Node, report.Kind, report.DataBytes, report.ErasedBytes, report.Seconds, report.DataMegabytesPerSecond, Device.Epoch);
        }
        catch (Exception e) when (e is not OperationCanceledException || !stopping.IsCancellationRequested)
        {
            _logger.LogWarning("volume {Volume}: rebuilding the replica on {Node} stopped: {Reason}; retrying later", _spec.Name, member.Node, e.Message);
        }
        catch (OperationCanceledException)
        {
            // The volume is closing.
        }
        finally
        {
            if (channel is not null)
            {
                await channel.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// An in-sync replica whose node restarted since it joined may have lost acknowledged writes from its cache, yet
    /// counts as in sync until a write to it fails, and the failover rule will not promote it. It leaves the standard
    /// way, by this owner (whose epoch must stay the store's): its link, broken by the restart anyway, is closed, a
    /// flush fails on it, and it is dropped from the in-sync set (bumping the epoch); then it is rebuilt.
    /// </summary>
    private async Task DropRestartedAsync(ReplicaSet set)
    {
        var restarted = set.InSyncRemotes.Where(m => ReplicaSet.HasRestarted(m, _context.BootOf)).Select(m => m.Node).ToHashSet(StringComparer.Ordinal);
        if (restarted.Count == 0)
        {
            return;
        }
        NodeChannel[] closing;
        lock (_links)
        {
            closing = [.. _links.Where(l => restarted.Contains(l.Replica))];
            _links.RemoveAll(l => restarted.Contains(l.Replica));
        }
        _logger.LogWarning("volume {Volume}: the nodes of in-sync replicas {Nodes} restarted since they joined; dropping them to resync them",
            _spec.Name, string.Join(", ", restarted));
        foreach (var link in closing)
        {
            await link.DisposeAsync();
        }
        try
        {
            await Device.FlushAsync(_closing.Token);
        }
        catch (Exception e) when (e is Core.BlockDeviceException or ReplicaFencedException)
        {
            _logger.LogWarning("volume {Volume}: the flush that drops restarted replicas failed: {Reason}", _spec.Name, e.Message);
        }
    }

    /// <summary>
    /// An in-sync replica beyond the asked-for count leaves the standard way: its link is closed, the next request to it
    /// fails, and the owner drops it from the in-sync set (bumping the epoch); the controller then removes it.
    /// </summary>
    private async Task RetireSurplusAsync(ReplicaSet set, int desired)
    {
        if (set.Members.Count <= desired || set.Members.Any(m => m.State != ReplicaState.InSync))
        {
            return; // the controller sheds copies that are not in sync first
        }
        NodeChannel? retired;
        lock (_links)
        {
            retired = _links.LastOrDefault(l => set.Find(l.Replica)?.State == ReplicaState.InSync);
            if (retired is not null)
            {
                _links.Remove(retired);
            }
        }
        if (retired is null)
        {
            return;
        }
        _logger.LogInformation("volume {Volume}: retiring the replica on {Node}: the volume asks for {Desired} replicas", _spec.Name, retired.Replica, desired);
        await retired.DisposeAsync();
        await Device.FlushAsync(_closing.Token); // reaches the closed link, which fails and is dropped
    }

    private async Task StopRebuildsAsync()
    {
        Task[] running;
        lock (_rebuilds)
        {
            running = [.. _rebuilds.Values.Select(r => r.Task)];
        }
        await Task.WhenAll(running);
    }

    /// <summary>Reports on the reporting thread; <see cref="Progress{T}"/> would post to a context that may not exist.</summary>
    private sealed class SynchronousProgress(Action<RebuildProgress> report) : IProgress<RebuildProgress>
    {
        public void Report(RebuildProgress value) => report(value);
    }
}

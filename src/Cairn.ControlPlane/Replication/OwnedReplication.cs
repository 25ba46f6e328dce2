using Cairn.Core;
using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane.Replication;

/// <summary>
/// A replicated volume as its owner runs it: the <see cref="ReplicatedVolume"/> over the local copy and one
/// <see cref="ReplicaLink"/> per in-sync remote. Opening connects to every in-sync replica at the current epoch —
/// which also raises their epoch, so a deposed owner is refused from then on — and drops, by compare-and-swap, those
/// that do not answer in time before a single request is served.
/// </summary>
public sealed partial class OwnedReplication : IAsyncDisposable
{
    private readonly List<NodeChannel> _links;
    private readonly ReplicationContext _context;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _closing = new();

    private readonly LeaseBinding _lease;

    private OwnedReplication(ReplicatedVolume device, List<NodeChannel> links, VolumeSpec spec, ReplicationContext context, LeaseBinding lease, ILogger logger)
    {
        Device = device;
        _lease = lease;
        _links = links;
        _spec = spec;
        _context = context;
        _logger = logger;
        device.ReadRepaired += LogReadRepair;
        _flushing = Task.Run(FlushPeriodicallyAsync);
    }

    /// <summary>How often replicas are flushed while changes go on, without a client asking.</summary>
    public static readonly TimeSpan FlushInterval = TimeSpan.FromSeconds(1);

    private readonly Task _flushing;

    /// <summary>
    /// Flushes the volume every <see cref="FlushInterval"/> while it changes, like a filesystem's commit interval: what a
    /// replica that crashes can lose, and so what its resync must copy besides what it missed, stays a second's worth of
    /// writes even when clients never flush.
    /// </summary>
    private async Task FlushPeriodicallyAsync()
    {
        var stopping = _closing.Token;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                if (Device.HasUnflushedChanges) // at once on opening: the copies may hold what an earlier owner left unflushed
                {
                    await Device.FlushAsync(stopping);
                }
                await Task.Delay(FlushInterval, stopping);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _logger.LogDebug("volume {Volume}: periodic flush failed: {Reason}", _spec.Name, e.Message); // a failed replica is dropped by the flush itself
            }
        }
    }

    public ReplicatedVolume Device { get; }

    /// <summary>A client read met a bad block here: it was rewritten from a replica before the read went on, or the read failed.</summary>
    private void LogReadRepair(BlockRepair repair) => _logger.Log(repair.Outcome == BlockRepairOutcome.Unrecoverable ? LogLevel.Error : LogLevel.Warning,
        "volume {Volume}: a read met a bad block at byte {Offset} on this node ({Node}): {Outcome}: {Detail}",
        _spec.Name, repair.OffsetBytes, _context.Node, repair.Outcome, repair.Detail);

    /// <summary>
    /// The node's lease was lost and granted anew since this owner last proved its epoch: it serves nothing until
    /// <see cref="Rebind"/> says the store still names it the owner at its epoch (or it is closed, when it does not).
    /// </summary>
    public bool LeaseRenewed => _lease.Renewed;

    /// <summary>Serves again under the current lease grant, once the store was read after that grant and still names this owner at <see cref="ReplicatedVolume.Epoch"/>.</summary>
    public void Rebind(long term) => _lease.Rebind(term);

    /// <summary>The current grant of the node's lease, read before the store is: what <see cref="Rebind"/> takes.</summary>
    public long LeaseTerm => _context.Lease.Term;

    /// <param name="snapshots">The local copy's snapshots, which full rebuilds recreate on replicas; null when its pool keeps none.</param>
    /// <param name="history">What the local copy received as a replica before this node was promoted; null when it was not one.</param>
    public static async Task<OwnedReplication> OpenAsync(VolumeSpec spec, IBlockDevice local, ISnapshotImages? snapshots, WriteHistory? history,
        ReplicationContext context, ILogger logger, CancellationToken cancellationToken)
    {
        var set = spec.Replication ?? throw new ArgumentException($"volume '{spec.Name}' is not replicated", nameof(spec));
        long term = context.Lease.Term; // the spec was read from the store under this grant, or the one before it (then it is renewed and re-read)
        var remotes = set.InSyncRemotes.ToList();
        var connecting = remotes.Select(m => ConnectAsync(spec, m.Node, set.Epoch, context, logger, cancellationToken)).ToList();
        var links = (await Task.WhenAll(connecting)).ToList();
        var reached = links.OfType<NodeChannel>().ToList();
        var unreachable = remotes.Where((m, i) => links[i] is null).Select(m => m.Node).ToList();
        ulong epoch = set.Epoch;
        var inSyncSet = new SpecInSyncSet(context.Writer, spec.Name, context.Node);
        try
        {
            foreach (var link in reached.ToList())
            {
                // It answered, but its node may have restarted since it joined the in-sync set (within its lease, so the
                // controller saw no gap): then it may lack acknowledged writes it lost from its cache. Not trusted:
                // dropped before anything is served, and rebuilt.
                if (set.Find(link.Replica)?.Boot is { } joined && await context.ReadBootAsync(link.Replica, cancellationToken) is { } now
                    && !string.Equals(now, joined, StringComparison.Ordinal))
                {
                    reached.Remove(link);
                    unreachable.Add(link.Replica);
                    await link.DisposeAsync();
                    logger.LogWarning("volume {Volume}: the node of the replica on {Node} restarted since it joined the in-sync set (boot {Joined}, now {Now})",
                        spec.Name, link.Replica, joined, now);
                }
            }
            if (unreachable.Count > 0)
            {
                // What they may have lost unflushed under the previous owner is unknown (its activity log is gone): from the first epoch on.
                epoch = await inSyncSet.DropAsync(unreachable, epoch, ReplicaSet.FirstEpoch, cancellationToken);
                logger.LogWarning("volume {Volume}: replicas on {Nodes} did not answer or restarted; dropped from the in-sync set (epoch {Epoch})",
                    spec.Name, string.Join(", ", unreachable), epoch);
            }
            await MarkServedAsync(spec.Name, epoch, context, cancellationToken);
        }
        catch
        {
            foreach (var link in reached)
            {
                await link.DisposeAsync();
            }
            throw;
        }
        // With no in-sync replica besides this one, nobody can be promoted in its place, so there is no one to be fenced
        // from: such a volume keeps serving through a cluster-store outage, like a volume with one copy.
        ReplicatedVolume? device = null;
        var binding = new LeaseBinding(context.Lease, term);
        var lease = new ConditionalLease(() => device?.InSyncReplicaCount is null or 0 || binding.IsHeld);
        // The copies were written before this owner opened them (by a previous owner, or by this node in an earlier run or
        // ownership): what they hold unflushed is unknown until the first flush (sent at once by the periodic flusher).
        device = new ReplicatedVolume(local, reached, epoch, inSyncSet, lease, remotesMayHoldUnflushedChanges: true)
        {
            Snapshots = snapshots,
            LeaseWait = context.LeaseWait,
        };
        logger.LogInformation("volume {Volume}: owner at epoch {Epoch} with {Count} in-sync remote replicas ({Nodes})",
            spec.Name, epoch, reached.Count, string.Join(", ", reached.Select(l => l.Replica)));
        if (history is not null)
        {
            await TakeOverResyncRecordsAsync(device, set, history, context.Node, spec.Name, logger);
        }
        return new OwnedReplication(device, reached, spec, context, binding, logger);
    }

    /// <summary>
    /// A replica that dropped out before this node was promoted can be resynced from what this node received since then
    /// (it was in sync, so it received every acknowledged write) — unless it was itself an owner meanwhile: an owner
    /// may hold writes it never sent anyone, so only a full copy makes it equal again.
    /// </summary>
    private static async Task TakeOverResyncRecordsAsync(ReplicatedVolume device, ReplicaSet set, WriteHistory history, string self, string volume,
        ILogger logger)
    {
        foreach (var member in set.Members)
        {
            if (member.State == ReplicaState.InSync || member.FailedAtEpoch == 0 || member.Node == self || history.SawOwner(member.Node))
            {
                continue;
            }
            if (history.Since(member.FailedAtEpoch) is { } missed && await device.TrackAsync(member.Node, missed))
            {
                logger.LogInformation("volume {Volume}: the replica on {Node} can be resynced from the {Bytes} bytes this node recorded since epoch {Epoch}",
                    volume, member.Node, missed.DirtyBytes, member.FailedAtEpoch);
            }
        }
    }

    /// <summary>
    /// Records in the store that this node serves the volume at <paramref name="epoch"/>, before it serves anything:
    /// until then the controller may still undo the failover that made it the owner (<see cref="ReplicaSet.LastServed"/>),
    /// after it never. Throws <see cref="ReplicaFencedException"/> when the store no longer names this node, at this
    /// epoch and for this boot, as the owner.
    /// </summary>
    private static async Task MarkServedAsync(string volume, ulong epoch, ReplicationContext context, CancellationToken cancellationToken)
    {
        var written = await context.Writer.UpdateAsync(volume, current =>
        {
            var set = current.Replication ?? throw new ReplicaFencedException($"volume '{volume}' is no longer replicated");
            if (!string.Equals(set.Owner, context.Node, StringComparison.Ordinal) || set.Epoch != epoch)
            {
                throw new ReplicaFencedException($"volume '{volume}' is now owned by {set.Owner} at epoch {set.Epoch}, not by {context.Node} at {epoch}");
            }
            ReplicaSet served;
            try
            {
                served = set.MarkServed(context.Node, context.Boot);
            }
            catch (InvalidOperationException e)
            {
                throw new ReplicaFencedException($"volume '{volume}': {e.Message}");
            }
            return served.SameAs(set) ? null : served;
        }, cancellationToken: cancellationToken);
        if (written is null)
        {
            throw new ReplicaFencedException($"volume '{volume}' was deleted");
        }
    }

    /// <summary>Connects to one replica, retrying until <see cref="ReplicationContext.ConnectWithin"/>: a new replica's node creates it
    /// only when its watch shows the volume. Null when it never answered.</summary>
    private static async Task<NodeChannel?> ConnectAsync(VolumeSpec spec, string node, ulong epoch, ReplicationContext context, ILogger logger,
        CancellationToken cancellationToken, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? context.ConnectWithin);
        string? lastError = null;
        while (DateTime.UtcNow < deadline)
        {
            if (context.ReplicaEndpointOf(node) is { } endpoint)
            {
                try
                {
                    using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    attempt.CancelAfter(TimeSpan.FromSeconds(2));
                    return new NodeChannel(node, await ReplicaLink.ConnectAsync(endpoint, spec.Id, epoch, attempt.Token));
                }
                catch (Exception e) when (e is ReplicaLinkException or System.Net.Sockets.SocketException or IOException
                    || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
                {
                    lastError = e.Message;
                }
            }
            else
            {
                lastError = $"node {node} is Down or publishes no replica address";
            }
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken);
        }
        logger.LogWarning("volume {Volume}: replica on {Node} unreachable: {Error}", spec.Name, node, lastError);
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        await _closing.CancelAsync();
        await _flushing;
        await StopRebuildsAsync();
        Device.Dispose();
        List<NodeChannel> links;
        lock (_links)
        {
            links = [.. _links];
            _links.Clear();
        }
        foreach (var link in links)
        {
            await link.DisposeAsync();
        }
        _closing.Dispose();
    }
}

/// <summary>A link to a replica named by the node that holds it: the in-sync set speaks of nodes, the replica service of volume ids.</summary>
public sealed class NodeChannel(string node, ReplicaLink link) : IReplicaChannel, IAsyncDisposable
{
    public string Replica => node;

    public ReplicaLink Link => link;

    public ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default) =>
        link.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);

    public ValueTask DisposeAsync() => link.DisposeAsync();
}

/// <summary>
/// The node's lease as one owned volume may count on it: held only under the grant its epoch was last proven under.
/// After the lease was lost and granted anew, the controller may have failed the volume over meanwhile, and this node's
/// view may not show it yet; until the store is read again the volume serves nothing, reads included (a deposed owner
/// would serve them stale).
/// </summary>
internal sealed class LeaseBinding(IOwnerLease lease, long term)
{
    private long _term = term;

    public bool IsHeld => lease.IsHeld && lease.Term == Interlocked.Read(ref _term);

    public bool Renewed => lease.Term != Interlocked.Read(ref _term);

    public void Rebind(long term) => Interlocked.Exchange(ref _term, term);
}

/// <summary>A lease that counts as held whenever <paramref name="held"/> says so.</summary>
internal sealed class ConditionalLease(Func<bool> held) : IOwnerLease
{
    public bool IsHeld => held();
}

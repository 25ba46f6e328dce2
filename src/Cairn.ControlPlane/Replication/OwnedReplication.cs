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
    }

    public ReplicatedVolume Device { get; }

    /// <summary>
    /// The node's lease was lost and granted anew since this owner last proved its epoch: it serves nothing until
    /// <see cref="Rebind"/> says the store still names it the owner at its epoch (or it is closed, when it does not).
    /// </summary>
    public bool LeaseRenewed => _lease.Renewed;

    /// <summary>Serves again under the current lease grant, once the store was read after that grant and still names this owner at <see cref="ReplicatedVolume.Epoch"/>.</summary>
    public void Rebind(long term) => _lease.Rebind(term);

    /// <summary>The current grant of the node's lease, read before the store is: what <see cref="Rebind"/> takes.</summary>
    public long LeaseTerm => _context.Lease.Term;

    public static async Task<OwnedReplication> OpenAsync(VolumeSpec spec, IBlockDevice local, ReplicationContext context, ILogger logger,
        CancellationToken cancellationToken)
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
            if (unreachable.Count > 0)
            {
                epoch = await inSyncSet.DropAsync(unreachable, epoch, cancellationToken);
                logger.LogWarning("volume {Volume}: replicas on {Nodes} did not answer; dropped from the in-sync set (epoch {Epoch})",
                    spec.Name, string.Join(", ", unreachable), epoch);
            }
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
        var lease = new ConditionalLease(() => device?.InSyncReplicas.Count is null or 0 || binding.IsHeld);
        device = new ReplicatedVolume(local, reached, epoch, inSyncSet, lease);
        logger.LogInformation("volume {Volume}: owner at epoch {Epoch} with {Count} in-sync remote replicas ({Nodes})",
            spec.Name, epoch, reached.Count, string.Join(", ", reached.Select(l => l.Replica)));
        return new OwnedReplication(device, reached, spec, context, binding, logger);
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

using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// An owner's connection to one replica over the simulated network: the simulated <see cref="ReplicaLink"/>.
/// <para>
/// Ordering follows the real system. <see cref="ReplicaLink"/> writes requests to one TCP stream and the replica's
/// connection executes them one at a time in arrival order, so within one connection requests arrive in order (each
/// arrival is at or after the previous one), execute serially and are answered in order. Reordering happens where the
/// real system allows it: between connections (each replica sees the owner's concurrent writes in its own order, and
/// the owner's local write runs alongside), between clients' requests, and between old and new connections (a deposed
/// owner's stragglers against a new owner's requests). Some seeds (<see cref="SimOptions.ReorderWithinLink"/>) also
/// reorder within a connection, as the protocol permits a future server to.
/// </para>
/// <para>
/// A lost request or reply, or a partition, leaves the request unanswered; after the TCP user timeout the connection
/// breaks and, like <see cref="ReplicaLink"/>, fails every waiting and later request with
/// <see cref="ReplicaLinkException"/>. A replica node that restarted answers with a reset. Requests already on the
/// wire when their sender crashes are still delivered; their replies go nowhere.
/// </para>
/// </summary>
internal sealed class SimReplicaChannel : IReplicaChannel
{
    private readonly SimCluster _cluster;
    private readonly SimNode _from;
    private readonly int _fromIncarnation;
    private readonly SimNode _to;
    private readonly int _toIncarnation;
    private readonly List<TaskCompletionSource<ReplicaStatus>> _waiting = [];
    private Task _executing = Task.CompletedTask;
    private long _lastArrivalUs;
    private long _lastReplyUs;
    private ulong _sequence;
    private string? _broken;

    private SimReplicaChannel(SimCluster cluster, SimNode from, SimNode to, ulong epoch)
    {
        _cluster = cluster;
        _from = from;
        _fromIncarnation = from.Incarnation;
        _to = to;
        _toIncarnation = to.Incarnation;
        Epoch = epoch;
    }

    public string Replica => _to.Name;

    /// <summary>
    /// True (today's replica server): requests arrive, execute and are answered in order. False models what the
    /// protocol allows (replies "in any order", matched by sequence): a server executing pipelined requests at once.
    /// </summary>
    private bool InOrder => !_cluster.Options.ReorderWithinLink;

    /// <summary>The epoch sent with every request: the one said at hello (a link does not follow later bumps).</summary>
    public ulong Epoch { get; }

    /// <summary>Connects and says hello at <paramref name="epoch"/>, raising the replica's epoch. A replica that has seen a newer one refuses.</summary>
    public static async Task<SimReplicaChannel> ConnectAsync(SimCluster cluster, SimNode from, SimNode to, ulong epoch, bool hello = true)
    {
        var channel = new SimReplicaChannel(cluster, from, to, epoch);
        if (!to.IsUp)
        {
            channel.Break($"{to.Name} is down");
            return channel;
        }
        if (!hello)
        {
            return channel;
        }
        ReplicaStatus status;
        try
        {
            status = await channel.RoundTripAsync(new ReplicaRequest(0, 0, epoch, 0, 0, 0), ReadOnlyMemory<byte>.Empty, default);
        }
        catch (ReplicaLinkException)
        {
            return channel; // unreachable: the link stays broken, so the owner's first write drops the replica
        }
        if (status == ReplicaStatus.StaleEpoch)
        {
            throw new ReplicaFencedException($"replica {to.Name} has seen an epoch newer than {epoch}: another owner took over");
        }
        return channel;
    }

    public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        var request = new ReplicaRequest(op, flags, Epoch, ++_sequence, offset, length);
        return await RoundTripAsync(request, payload.ToArray(), op == ReplicaOp.Read ? readInto[..(int)length] : default);
    }

    /// <summary>Op 0 is the hello: it only admits the epoch.</summary>
    private Task<ReplicaStatus> RoundTripAsync(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto)
    {
        var sim = _cluster.Sim;
        if (_from.Incarnation != _fromIncarnation)
        {
            return new TaskCompletionSource<ReplicaStatus>().Task; // the sender's node is gone: this code runs no more
        }
        if (_broken is { } reason)
        {
            return Task.FromException<ReplicaStatus>(new ReplicaLinkException($"replica {Replica}: {reason}"));
        }
        var reply = new TaskCompletionSource<ReplicaStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting.Add(reply);
        bool lost = _cluster.Network.Lost();
        long arrivalUs = sim.NowUs + _cluster.Network.DelayUs();
        _lastArrivalUs = InOrder ? Math.Max(arrivalUs, _lastArrivalUs) : arrivalUs;
        sim.TraceDetail(1, () => $"{_from.Name} -> {Replica} {Describe(request)}{(lost ? " (will be lost)" : "")}");
        sim.At(_lastArrivalUs - sim.NowUs, () => Arrive(request, payload, readInto, reply, lost));
        sim.At(_cluster.Options.LinkTimeoutUs, () =>
        {
            if (!reply.Task.IsCompleted && _from.Incarnation == _fromIncarnation)
            {
                Break($"no answer to request {request.Sequence} within {_cluster.Options.LinkTimeoutUs} µs");
            }
        });
        return reply.Task;
    }

    private void Arrive(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto, TaskCompletionSource<ReplicaStatus> reply, bool lost)
    {
        if (lost || !_to.IsUp || !_cluster.Network.Reachable(_from.Name, _to.Name) || _broken is not null)
        {
            return; // the sender finds out by its timeout
        }
        if (_to.Incarnation != _toIncarnation)
        {
            // The replica's node restarted: its new kernel answers the old connection with a reset.
            _cluster.Sim.At(_cluster.Network.DelayUs(), () => Break($"connection reset: {Replica} restarted"));
            return;
        }
        _executing = ExecuteInOrderAsync(InOrder ? _executing : Task.CompletedTask, request, payload, readInto, reply);
    }

    /// <summary>The replica's connection loop: one request at a time, in arrival order (as <c>ReplicaConnection</c> does).</summary>
    private async Task ExecuteInOrderAsync(Task previous, ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto,
        TaskCompletionSource<ReplicaStatus> reply)
    {
        await previous; // never faults: see the catch below
        try
        {
            await ExecuteAsync(request, payload, readInto, reply);
        }
        catch (Exception e)
        {
            _cluster.ReportError($"replica {Replica} failed executing {Describe(request)}: {e}");
        }
    }

    private async Task ExecuteAsync(ReplicaRequest request, ReadOnlyMemory<byte> payload, Memory<byte> readInto, TaskCompletionSource<ReplicaStatus> reply)
    {
        var target = _to.Target;
        if (_to.Incarnation != _toIncarnation || target is null)
        {
            return;
        }
        var buffer = request.Op == ReplicaOp.Read ? new byte[request.Length] : default(Memory<byte>);
        var status = request.Op == 0
            ? (target.TryAdmit(request.Epoch) ? ReplicaStatus.Ok : ReplicaStatus.StaleEpoch)
            : await target.ExecuteAsync(request, payload, buffer, CancellationToken.None);
        if (_to.Incarnation != _toIncarnation)
        {
            return; // crashed while executing: no reply
        }
        bool lost = _cluster.Network.Lost();
        var sim = _cluster.Sim;
        long replyUs = sim.NowUs + _cluster.Network.DelayUs();
        _lastReplyUs = InOrder ? Math.Max(replyUs, _lastReplyUs) : replyUs;
        sim.TraceDetail(2, () => $"{Replica} -> {_from.Name} reply {request.Sequence}: {status}{(lost ? " (will be lost)" : "")}");
        sim.At(_lastReplyUs - sim.NowUs, () =>
        {
            if (lost || _from.Incarnation != _fromIncarnation || !_cluster.Network.Reachable(_from.Name, _to.Name) || _broken is not null)
            {
                return;
            }
            if (status == ReplicaStatus.Ok && request.Op == ReplicaOp.Read)
            {
                buffer.CopyTo(readInto);
            }
            _waiting.Remove(reply);
            reply.TrySetResult(status);
        });
    }

    /// <summary>The owner gives up on this replica: every waiting and later request fails, so its next change drops it.</summary>
    public void Abandon(string reason) => Break(reason);

    private void Break(string reason)
    {
        if (_broken is not null)
        {
            return;
        }
        _broken = reason;
        _cluster.Sim.Trace($"link {_from.Name} -> {Replica} (epoch {Epoch}) broken: {reason}");
        var waiting = _waiting.ToList();
        _waiting.Clear();
        foreach (var request in waiting)
        {
            request.TrySetException(new ReplicaLinkException($"replica {Replica}: {reason}"));
        }
    }

    private static string Describe(ReplicaRequest r) => r.Op == 0
        ? $"hello epoch {r.Epoch}"
        : $"#{r.Sequence} {r.Op} {r.Flags} block {r.Offset / SimDisk.BlockBytes} epoch {r.Epoch}";
}

using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// What the system promised, and whether it kept it. Per block it keeps every version written (issued, acknowledged
/// or not) and, for acknowledged ones, who must still hold them.
/// <para>
/// Invariant 1, made exact: an acknowledged write W must stay readable as long as some replica that was in sync when
/// W was acknowledged (the store's in-sync set at that moment) still "holds W safely": it has not crashed since the
/// owner started W, or W was durable on it when it crashed (W acknowledged with FUA, or a flush issued after W's acknowledgement was
/// acknowledged while it was in sync). W may be lost — is forgiven — only when a crash takes away the last in-sync
/// replica that held it safely: then every in-sync copy was in a cache that died, which a write without FUA or flush
/// allows. A replica leaving the in-sync set forgives nothing: if the store's in-sync set ends up without a safe
/// holder of W otherwise (a failover to a replica that lost W), losing W is a violation. While a failover is
/// unfinished (the new owner has not served), the deposed owner still counts as in sync: the volume may go back to it.
/// </para>
/// <para>
/// Reads: the data must be a whole payload of that block, of a version that was written, and no older than the
/// newest unforgiven write acknowledged before the read was issued. Zeros match the newest trim / write-zeroes (or the
/// initial state). At the end, after healing, every block is read once more through the final owner, and from the
/// drive of every replica still in sync, under the same rule. Also checked on every store change: a new owner was in sync before it was promoted (invariant 2).
/// </para>
/// </summary>
internal sealed class Checker
{
    private readonly SimCluster _cluster;
    private readonly List<Written>[] _blocks;
    private readonly List<string> _violations = [];
    private readonly Dictionary<string, long> _lastCrashUs = new(StringComparer.Ordinal);

    public Checker(SimCluster cluster)
    {
        _cluster = cluster;
        _blocks = [.. Enumerable.Range(0, cluster.Options.Blocks).Select(_ => new List<Written>())];
        cluster.Acknowledged += OnAcknowledged;
        cluster.Crashed += OnCrashed;
        cluster.Store.Committed += OnCommitted;
        cluster.Store.Activated += request =>
        {
            if (_lastCrashUs.GetValueOrDefault(request.Node, long.MinValue) >= request.SentUs)
            {
                ForgiveAsIfBeforeCrash(request, cluster.Store.Set);
            }
        };
    }

    public IReadOnlyList<string> Violations => _violations;

    /// <summary>Off only in the self-test, to show the data checks catch a defect on their own.</summary>
    public bool CheckStoreTransitions { get; init; } = true;

    public int AcknowledgedWrites { get; private set; }

    public int Reads { get; private set; }

    public int Forgiven { get; private set; }

    /// <summary>A client sends a write for the first time (its retries carry the same version).</summary>
    public void Issued(ClientOp op)
    {
        if (op.Mutates && !_blocks[op.Block].Any(w => w.Version == op.Version))
        {
            _blocks[op.Block].Add(new Written(op.Version, op.Kind != OpKind.Write));
        }
    }

    /// <summary>A read returned <paramref name="data"/>; it was issued (this attempt) at <paramref name="issuedUs"/>.</summary>
    public void ReadReturned(ClientOp op, ReadOnlySpan<byte> data, long issuedUs, string where)
    {
        Reads++;
        var writes = _blocks[op.Block];
        long version = Payload.VersionOf(op.Block, data);
        var required = writes.Where(w => w.AckedUs is { } at && at <= issuedUs && !w.Forgiven).MaxBy(w => w.Version);
        string context = $"{where}: {op} issued at {issuedUs} µs";
        if (version < 0)
        {
            Violate($"{context} returned data that is no whole version of block {op.Block} (torn or foreign)");
            return;
        }
        if (version > 0 && !writes.Any(w => w.Version == version && !w.Zero))
        {
            Violate($"{context} returned v{version}, which was never written");
            return;
        }
        bool fresh = required is null || (version == 0
            ? writes.Any(w => w.Zero && w.Version >= required.Version)
            : version >= required.Version);
        if (!fresh)
        {
            Violate($"{context} returned {(version == 0 ? "zeros" : $"v{version}")}, older than v{required!.Version} " +
                $"acknowledged at {required.AckedUs} µs to in-sync [{string.Join(",", required.Holders)}], still held safely by [{string.Join(",", required.Safe)}]");
        }
    }

    public void Violate(string message)
    {
        _cluster.Sim.Trace($"VIOLATION: {message}");
        _violations.Add(message);
    }

    private void OnAcknowledged(string owner, ClientOp op, long startedUs)
    {
        var inSync = _cluster.Store.Set.InSync.Select(m => m.Node).ToHashSet(StringComparer.Ordinal);
        _cluster.Sim.Trace($"ack {op} by {owner}, in sync [{string.Join(",", inSync.Order())}]");
        if (op.Kind == OpKind.Flush)
        {
            foreach (var written in _blocks.SelectMany(b => b).Where(w => w.AckedUs <= startedUs))
            {
                written.Durable.UnionWith(inSync.Where(written.Safe.Contains));
            }
            return;
        }
        if (!op.Mutates)
        {
            return;
        }
        var w = _blocks[op.Block].First(x => x.Version == op.Version);
        if (w.AckedUs is not null)
        {
            return; // a retry acknowledged again
        }
        AcknowledgedWrites++;
        w.AckedUs = _cluster.Sim.NowUs;
        w.Holders.UnionWith(inSync);
        // A replica that crashed while the write was in flight may have acknowledged it from a cache it then lost:
        // the owner cannot know, so it does not hold the write safely (a FUA write it acknowledged was durable).
        w.Safe.UnionWith(inSync.Where(n => op.Fua || _lastCrashUs.GetValueOrDefault(n, long.MinValue) < startedUs));
        if (op.Fua)
        {
            w.Durable.UnionWith(inSync);
        }
    }

    /// <summary>
    /// The replicas that count as in sync for invariant 1: those in sync now and, while a failover is unfinished (its
    /// new owner has not served yet), those in sync at the last epoch an owner served — the deposed owner among them,
    /// since the volume may still go back to it.
    /// </summary>
    private HashSet<string> CountingAsInSync(ReplicaSet current)
    {
        var inSync = current.InSync.Select(m => m.Node).ToHashSet(StringComparer.Ordinal);
        if (current.LastServed is { } served && !string.Equals(served.Owner, current.Owner, StringComparison.Ordinal))
        {
            inSync.UnionWith(served.InSync.Select(m => m.Node));
        }
        return inSync;
    }

    private void OnCrashed(string node)
    {
        _lastCrashUs[node] = _cluster.Sim.NowUs;
        var inSync = CountingAsInSync(_cluster.Store.Set);
        foreach (var w in _blocks.SelectMany(b => b).Where(w => w.AckedUs is not null && !w.Forgiven))
        {
            if (w.Durable.Contains(node) || !w.Safe.Remove(node))
            {
                continue;
            }
            w.LostByCrashUs[node] = _cluster.Sim.NowUs;
            if (!inSync.Contains(node))
            {
                continue;
            }
            if (!w.Safe.Any(inSync.Contains))
            {
                w.Forgiven = true;
                Forgiven++;
            }
        }
    }

    private void OnCommitted(ReplicaSet old, ReplicaSet next, StoreRequest? request)
    {
        if (request is not null && _lastCrashUs.GetValueOrDefault(request.Node, long.MinValue) >= request.SentUs)
        {
            ForgiveAsIfBeforeCrash(request, next);
        }
        if (!CheckStoreTransitions)
        {
            return;
        }
        // In sync as of the last epoch at which an owner served: nothing was acknowledged after it.
        var basis = old.LastServed ?? old;
        if (!string.Equals(old.Owner, next.Owner, StringComparison.Ordinal) && basis.Find(next.Owner)?.State != ReplicaState.InSync)
        {
            Violate($"epoch {next.Epoch}: {next.Owner} was promoted but was {basis.Find(next.Owner)?.State} at epoch {basis.Epoch}, the last one served");
        }
        if (next.Epoch <= old.Epoch)
        {
            Violate($"the owner or in-sync set changed from epoch {old.Epoch} to {next.Epoch} without a bump");
        }
    }

    /// <summary>
    /// An owner sent a change (a drop, its activation) and crashed before it landed. Nobody can tell that from the
    /// change landing first and the crash following, in which case the crash took the last in-sync holder: judge it as
    /// that order.
    /// </summary>
    private void ForgiveAsIfBeforeCrash(StoreRequest request, ReplicaSet next)
    {
        var inSync = CountingAsInSync(next);
        foreach (var w in _blocks.SelectMany(b => b).Where(w => w.AckedUs is not null && !w.Forgiven))
        {
            if (w.LostByCrashUs.TryGetValue(request.Node, out long lostUs) && lostUs >= request.SentUs && !w.Safe.Any(inSync.Contains))
            {
                w.Forgiven = true;
                Forgiven++;
            }
        }
    }

    private sealed class Written(long version, bool zero)
    {
        public long Version { get; } = version;

        public bool Zero { get; } = zero;

        public long? AckedUs { get; set; }

        public bool Forgiven { get; set; }

        public HashSet<string> Holders { get; } = new(StringComparer.Ordinal);

        public HashSet<string> Safe { get; } = new(StringComparer.Ordinal);

        public HashSet<string> Durable { get; } = new(StringComparer.Ordinal);

        /// <summary>Replicas that lost this write from their cache in a crash, and when.</summary>
        public Dictionary<string, long> LostByCrashUs { get; } = new(StringComparer.Ordinal);
    }
}

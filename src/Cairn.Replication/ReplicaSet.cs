using System.Text.Json.Serialization;

namespace Cairn.Replication;

/// <summary>Where a replica stands with respect to the volume's acknowledged writes.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ReplicaState>))]
public enum ReplicaState
{
    /// <summary>Has every acknowledged write; receives every new one before it is acknowledged; may be promoted.</summary>
    InSync,

    /// <summary>Receives new writes while the owner copies what it is missing; never promoted, never read from.</summary>
    Rebuilding,

    /// <summary>Missed writes (its node failed, or it returned an error); waits for resync or replacement.</summary>
    Failed,
}

/// <summary>One replica of a volume: on which node (and pool there) it lives and whether it is in sync.</summary>
/// <param name="FailedAtEpoch">The epoch at which it left the in-sync set (0 when it never did): an owner that has
/// tracked the regions written since then can resync it from those alone.</param>
/// <param name="Reason">Why it is not in sync, for people.</param>
public sealed record ReplicaMember(string Node, string Pool, ReplicaState State, ulong FailedAtEpoch = 0, string? Reason = null);

/// <summary>
/// A volume's replicas, its owner and its epoch, as the cluster store holds them (invariant 2). Every change of the
/// owner or of the in-sync set goes through one of these transitions, each of which bumps the epoch; callers write
/// the result by compare-and-swap, so of two concurrent changes only one lands. Pure: the controller, the owner's
/// engine and the deterministic simulation share these rules.
/// </summary>
public sealed record ReplicaSet(ulong Epoch, string Owner, IReadOnlyList<ReplicaMember> Members)
{
    /// <summary>A new volume: every replica starts empty, hence in sync; the first member owns it.</summary>
    public static ReplicaSet Create(IReadOnlyList<(string Node, string Pool)> placed)
    {
        if (placed.Count == 0)
        {
            throw new ArgumentException("a volume needs at least one replica", nameof(placed));
        }
        if (placed.Select(p => p.Node).Distinct(StringComparer.Ordinal).Count() != placed.Count)
        {
            throw new ArgumentException("two replicas of one volume may not share a node", nameof(placed));
        }
        return new ReplicaSet(1, placed[0].Node, [.. placed.Select(p => new ReplicaMember(p.Node, p.Pool, ReplicaState.InSync))]);
    }

    public ReplicaMember? Find(string node) => Members.FirstOrDefault(m => string.Equals(m.Node, node, StringComparison.Ordinal));

    public IEnumerable<ReplicaMember> InSync => Members.Where(m => m.State == ReplicaState.InSync);

    /// <summary>The in-sync replicas other than the owner: the ones a write must reach before it is acknowledged.</summary>
    public IEnumerable<ReplicaMember> InSyncRemotes => InSync.Where(m => !string.Equals(m.Node, Owner, StringComparison.Ordinal));

    public bool Contains(string node) => Find(node) is not null;

    /// <summary>Takes failed replicas out of the in-sync set (the owner, after a write to them failed). Bumps the epoch.</summary>
    public ReplicaSet Drop(IReadOnlyCollection<string> nodes, string reason)
    {
        if (nodes.Contains(Owner, StringComparer.Ordinal))
        {
            throw new ArgumentException($"the owner {Owner} cannot drop itself; fail over instead", nameof(nodes));
        }
        return Bumped(Members.Select(m => nodes.Contains(m.Node, StringComparer.Ordinal) && m.State != ReplicaState.Failed
            ? m with { State = ReplicaState.Failed, FailedAtEpoch = m.State == ReplicaState.InSync ? Epoch : m.FailedAtEpoch, Reason = reason }
            : m));
    }

    /// <summary>A rebuilt replica has caught up and joins the in-sync set. Bumps the epoch.</summary>
    public ReplicaSet Admit(string node)
    {
        var member = Find(node) ?? throw new ArgumentException($"{node} holds no replica", nameof(node));
        if (member.State != ReplicaState.Rebuilding)
        {
            throw new InvalidOperationException($"only a rebuilding replica can be admitted; {node} is {member.State}");
        }
        return Bumped(Members.Select(m => m == member ? m with { State = ReplicaState.InSync, FailedAtEpoch = 0, Reason = null } : m));
    }

    /// <summary>The owner starts copying to a replica (a new one, or a failed one that came back). The in-sync set is unchanged: no bump.</summary>
    public ReplicaSet StartRebuild(string node)
    {
        var member = Find(node) ?? throw new ArgumentException($"{node} holds no replica", nameof(node));
        if (member.State == ReplicaState.InSync)
        {
            throw new InvalidOperationException($"{node} is in sync; nothing to rebuild");
        }
        return this with { Members = [.. Members.Select(m => m == member ? m with { State = ReplicaState.Rebuilding, Reason = null } : m)] };
    }

    /// <summary>A new replica on <paramref name="node"/>, empty: it must be rebuilt before it counts. No bump.</summary>
    public ReplicaSet Add(string node, string pool)
    {
        if (Contains(node))
        {
            throw new InvalidOperationException($"{node} already holds a replica of this volume");
        }
        return this with { Members = [.. Members, new ReplicaMember(node, pool, ReplicaState.Failed, 0, "new replica, not yet copied")] };
    }

    /// <summary>Removes a replica that is not the owner. Bumps the epoch when it was in sync.</summary>
    public ReplicaSet Remove(string node)
    {
        var member = Find(node) ?? throw new ArgumentException($"{node} holds no replica", nameof(node));
        if (string.Equals(node, Owner, StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"{node} owns the volume; move ownership before removing its replica");
        }
        var rest = Members.Where(m => m != member);
        return member.State == ReplicaState.InSync ? Bumped(rest) : this with { Members = [.. rest] };
    }

    /// <summary>
    /// Picks a new owner when the current one is gone: an in-sync replica whose node <paramref name="isUp"/>, first in
    /// member order so every controller picks the same. The old owner's replica becomes Failed (it may hold writes
    /// nobody acknowledged and lacks what comes next). Null when no in-sync replica is up: the volume must wait, since
    /// promoting a replica that missed writes would serve stale data.
    /// </summary>
    public ReplicaSet? FailOver(Func<string, bool> isUp)
    {
        var next = InSyncRemotes.FirstOrDefault(m => isUp(m.Node));
        if (next is null)
        {
            return null;
        }
        var members = Members.Select(m => string.Equals(m.Node, Owner, StringComparison.Ordinal)
            ? m with { State = ReplicaState.Failed, FailedAtEpoch = Epoch, Reason = $"was the owner until epoch {Epoch}" }
            : m);
        return new ReplicaSet(Epoch + 1, next.Node, [.. members]);
    }

    /// <summary>Same epoch, owner and members (records compare lists by reference; sets read back from the store are new lists).</summary>
    public bool SameAs(ReplicaSet? other) =>
        other is not null && other.Epoch == Epoch && other.Owner == Owner && other.Members.SequenceEqual(Members);

    private ReplicaSet Bumped(IEnumerable<ReplicaMember> members) => new(Epoch + 1, Owner, [.. members]);
}

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
/// <param name="FailedAtEpoch">The oldest epoch whose writes it may lack (0 when it never left the in-sync set): the
/// epoch at which it left, or an earlier one when writes of that one were not yet flushed then (its node may have lost
/// them from its cache). An owner that has tracked the regions written since then can resync it from those alone.</param>
/// <param name="Reason">Why it is not in sync, for people.</param>
/// <param name="Boot">
/// The boot of its node (each start of the node's daemon is a new boot) at which it last joined the in-sync set: when
/// the volume was created, when its rebuild started (kept when it is admitted), or, for the owner, when it became the
/// owner. A node that restarted since may have lost acknowledged writes that were still in its cache (the block store
/// keeps only what a completed flush covered), so the replica no longer counts as in sync, whatever
/// <paramref name="State"/> says, until it is rebuilt. Null in records written before boots were recorded: unknown,
/// which is never taken as proof that it kept its writes (see <see cref="ReplicaSet.FailOver"/>).
/// </param>
public sealed record ReplicaMember(string Node, string Pool, ReplicaState State, ulong FailedAtEpoch = 0, string? Reason = null, string? Boot = null);

/// <summary>
/// A volume's replicas, its owner and its epoch, as the cluster store holds them (invariant 2). Every change of the
/// owner or of the in-sync set goes through one of these transitions, each of which bumps the epoch; callers write
/// the result by compare-and-swap, so of two concurrent changes only one lands. Pure: the controller, the owner's
/// engine and the deterministic simulation share these rules.
/// <para>
/// Boots: rules that must know whether a replica kept its writes take <c>bootOf</c>, the current boot of a node, or
/// null while it is Down. A member is <em>intact</em> when its node is up on the boot recorded in
/// <see cref="ReplicaMember.Boot"/>; it has <em>restarted</em> when its node is up on another one; it is
/// <em>away</em> when its boot is known and its node is Down (it may come back intact: a partition, not a crash).
/// </para>
/// </summary>
/// <param name="LastServed">
/// The set as of the last epoch at which an owner served (and so may have acknowledged writes), kept while a failover
/// has not been taken up: from <see cref="FailOver"/> until the new owner says it serves (<see cref="MarkServed"/>).
/// Nothing was acknowledged since that epoch, so every replica in sync in it still holds every acknowledged write —
/// the deposed owner too, which a failover marked Failed: the failover can still be undone. Null when the current
/// epoch served (or in records written before this was recorded, which are treated as served).
/// </param>
public sealed record ReplicaSet(ulong Epoch, string Owner, IReadOnlyList<ReplicaMember> Members, ReplicaSet? LastServed = null)
{
    /// <summary>A new volume: every replica starts empty, hence in sync, at its node's current boot; the first member owns it.</summary>
    /// <summary>The epoch a new volume's set starts at; as a <see cref="ReplicaMember.FailedAtEpoch"/>, "it may lack writes of any epoch".</summary>
    public const ulong FirstEpoch = 1;

    public static ReplicaSet Create(IReadOnlyList<(string Node, string Pool)> placed, Func<string, string?> bootOf)
    {
        ArgumentNullException.ThrowIfNull(bootOf);
        if (placed.Count == 0)
        {
            throw new ArgumentException("a volume needs at least one replica", nameof(placed));
        }
        if (placed.Select(p => p.Node).Distinct(StringComparer.Ordinal).Count() != placed.Count)
        {
            throw new ArgumentException("two replicas of one volume may not share a node", nameof(placed));
        }
        return new ReplicaSet(FirstEpoch, placed[0].Node, [.. placed.Select(p => new ReplicaMember(p.Node, p.Pool, ReplicaState.InSync, Boot: bootOf(p.Node)))]);
    }

    public ReplicaMember? Find(string node) => Members.FirstOrDefault(m => string.Equals(m.Node, node, StringComparison.Ordinal));

    public IEnumerable<ReplicaMember> InSync => Members.Where(m => m.State == ReplicaState.InSync);

    /// <summary>The in-sync replicas other than the owner: the ones a write must reach before it is acknowledged.</summary>
    public IEnumerable<ReplicaMember> InSyncRemotes => InSync.Where(m => !string.Equals(m.Node, Owner, StringComparison.Ordinal));

    public bool Contains(string node) => Find(node) is not null;

    /// <summary>Whether the member's node is up on the boot it joined at: only then does it surely still hold every write it took.</summary>
    public static bool IsIntact(ReplicaMember member, Func<string, string?> bootOf) =>
        member.Boot is { } joined && string.Equals(bootOf(member.Node), joined, StringComparison.Ordinal);

    /// <summary>Whether the member's node is known to have restarted since it joined: up, on another boot than the recorded one.</summary>
    public static bool HasRestarted(ReplicaMember member, Func<string, string?> bootOf) =>
        member.Boot is { } joined && bootOf(member.Node) is { } now && !string.Equals(now, joined, StringComparison.Ordinal);

    /// <summary>
    /// Whether the owner is gone: its node is Down, or it restarted since it became the owner (that boot's ownership is
    /// over: its copy may have lost acknowledged writes from its cache, so it must not serve as it is). An owner whose
    /// boot is unknown (an old record) and whose node is up is left serving.
    /// </summary>
    public bool NeedsFailOver(Func<string, string?> bootOf) =>
        bootOf(Owner) is null || (Find(Owner) is { } owner && HasRestarted(owner, bootOf));

    /// <summary>Takes failed replicas out of the in-sync set (the owner, after a write to them failed). Bumps the epoch.</summary>
    /// <param name="missingSince">The oldest epoch whose writes they may lack, when older than the current one: writes
    /// their cache still held when they left (see <see cref="ReplicaMember.FailedAtEpoch"/>).</param>
    public ReplicaSet Drop(IReadOnlyCollection<string> nodes, string reason, ulong missingSince = ulong.MaxValue)
    {
        ulong failedAt = Math.Max(FirstEpoch, Math.Min(Epoch, missingSince));
        if (nodes.Contains(Owner, StringComparer.Ordinal))
        {
            throw new ArgumentException($"the owner {Owner} cannot drop itself; fail over instead", nameof(nodes));
        }
        return Bumped(Members.Select(m => nodes.Contains(m.Node, StringComparer.Ordinal) && m.State != ReplicaState.Failed
            ? m with { State = ReplicaState.Failed, FailedAtEpoch = m.State == ReplicaState.InSync ? failedAt : m.FailedAtEpoch, Reason = reason }
            : m));
    }

    /// <summary>A rebuilt replica has caught up and joins the in-sync set, at the boot its rebuild started at. Bumps the epoch.</summary>
    public ReplicaSet Admit(string node)
    {
        var member = Find(node) ?? throw new ArgumentException($"{node} holds no replica", nameof(node));
        if (member.State != ReplicaState.Rebuilding)
        {
            throw new InvalidOperationException($"only a rebuilding replica can be admitted; {node} is {member.State}");
        }
        return Bumped(Members.Select(m => m == member ? m with { State = ReplicaState.InSync, FailedAtEpoch = 0, Reason = null } : m));
    }

    /// <summary>
    /// The owner starts copying to a replica (a new one, a failed one that came back, or one whose earlier rebuild
    /// stopped), whose node is on <paramref name="boot"/>: recorded now, taken at admission. Were the node to restart
    /// before the admission, the boot would give it away. The in-sync set is unchanged: no bump.
    /// </summary>
    public ReplicaSet StartRebuild(string node, string? boot)
    {
        var member = Find(node) ?? throw new ArgumentException($"{node} holds no replica", nameof(node));
        if (member.State == ReplicaState.InSync)
        {
            throw new InvalidOperationException($"{node} is in sync; nothing to rebuild");
        }
        return this with { Members = [.. Members.Select(m => m == member ? m with { State = ReplicaState.Rebuilding, Reason = null, Boot = boot } : m)] };
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
    /// The owner, on <paramref name="boot"/>, says it serves at this epoch: from now on it may acknowledge writes, so
    /// the failover that made it the owner can no longer be undone (<see cref="LastServed"/> is cleared). Records the
    /// owner's boot when unknown (an old record: it is the owner at this boot from now on). Neither the owner nor the
    /// in-sync set change: no bump. Throws when <paramref name="owner"/> does not own the volume, or owns it for another
    /// boot (it restarted since: it must wait for the controller to fail the volume over or give it back).
    /// </summary>
    public ReplicaSet MarkServed(string owner, string boot)
    {
        if (!string.Equals(owner, Owner, StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"{owner} does not own the volume; {Owner} does at epoch {Epoch}");
        }
        var member = Find(owner) ?? throw new InvalidOperationException($"the owner {owner} holds no replica");
        if (member.Boot is { } joined && !string.Equals(joined, boot, StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"{owner} became the owner at boot {joined} and has restarted since (boot {boot}); its copy may lack acknowledged writes");
        }
        return this with
        {
            LastServed = null,
            Members = member.Boot is null ? [.. Members.Select(m => m == member ? m with { Boot = boot } : m)] : Members,
        };
    }

    /// <summary>
    /// Picks a new owner when the current one is gone (<see cref="NeedsFailOver"/>), from the set of the last epoch an
    /// owner served (<see cref="LastServed"/>, else this one): nothing was acknowledged since, so every replica in sync
    /// there holds every acknowledged write — unless its node restarted since it joined, which may have cost it the
    /// writes in its cache. In order:
    /// <list type="number">
    /// <item>A failover not taken up yet is undone: the volume goes back to the deposed owner if it is intact.</item>
    /// <item>Else the first intact in-sync replica in member order (every controller picks the same). The old owner's
    /// replica becomes Failed (it may hold writes nobody acknowledged, and lacks what comes next).</item>
    /// <item>Else, if an in-sync replica is away, nothing: it may come back with writes no other replica kept, and
    /// promoting another would lose them.</item>
    /// <item>Else every in-sync replica restarted (or its boot is unknown): each lost at most what was never made durable,
    /// and each holds everything that was, so the owner's node, if up, keeps the volume ("restart in place"), or else
    /// the first live one takes it, at its current boot. The others become Failed, to be copied in full from it, so
    /// the replicas do not go on with different unflushed writes.</item>
    /// </list>
    /// Replicas that restarted since they joined become Failed in the same change: they are resynced, not trusted. Null
    /// when the owner is not gone, or when no replica may be promoted: the volume must wait, since promoting a replica
    /// that missed writes would serve stale data. Bumps the epoch past the current one; the result is not served yet.
    /// </summary>
    public ReplicaSet? FailOver(Func<string, string?> bootOf)
    {
        ArgumentNullException.ThrowIfNull(bootOf);
        if (!NeedsFailOver(bootOf))
        {
            return null;
        }
        var basis = LastServed ?? this;
        var next = GiveBack(basis, bootOf) ?? Promote(basis, bootOf) ?? RestartFromAnyLive(basis, bootOf);
        return next is null ? null : next with { Epoch = Epoch + 1, LastServed = basis };
    }

    private ReplicaSet? GiveBack(ReplicaSet basis, Func<string, string?> bootOf)
    {
        if (ReferenceEquals(basis, this) || string.Equals(basis.Owner, Owner, StringComparison.Ordinal)
            || basis.Find(basis.Owner) is not { } deposed || !IsIntact(deposed, bootOf))
        {
            return null;
        }
        return basis with { Members = [.. basis.Members.Select(m => FailIfRestarted(m, bootOf))] };
    }

    private static ReplicaSet? Promote(ReplicaSet basis, Func<string, string?> bootOf)
    {
        var next = basis.InSyncRemotes.FirstOrDefault(m => IsIntact(m, bootOf));
        if (next is null)
        {
            return null;
        }
        var members = basis.Members.Select(m => string.Equals(m.Node, basis.Owner, StringComparison.Ordinal)
            ? m with { State = ReplicaState.Failed, FailedAtEpoch = basis.Epoch, Reason = $"was the owner until epoch {basis.Epoch}" }
            : FailIfRestarted(m, bootOf));
        return new ReplicaSet(basis.Epoch, next.Node, [.. members]);
    }

    private static ReplicaSet? RestartFromAnyLive(ReplicaSet basis, Func<string, string?> bootOf)
    {
        var inSync = basis.InSync.ToList();
        if (inSync.Any(m => m.Boot is not null && bootOf(m.Node) is null))
        {
            return null; // away: it may come back holding writes the others lost
        }
        var chosen = inSync.FirstOrDefault(m => string.Equals(m.Node, basis.Owner, StringComparison.Ordinal) && bootOf(m.Node) is not null)
            ?? inSync.FirstOrDefault(m => bootOf(m.Node) is not null);
        if (chosen is null)
        {
            return null;
        }
        var members = basis.Members.Select(m =>
            m == chosen ? m with { Boot = bootOf(m.Node) }
            : m.State == ReplicaState.InSync ? m with
            {
                State = ReplicaState.Failed,
                FailedAtEpoch = FirstEpoch, // it restarted: what it lost from its cache may be of any epoch
                Reason = $"every in-sync replica restarted by epoch {basis.Epoch}; {chosen.Node} took the volume and this copy is resynced from it",
            }
            : m);
        return new ReplicaSet(basis.Epoch, chosen.Node, [.. members]);
    }

    /// <summary>A restarted replica may have lost writes of any epoch from its cache (when it last flushed is not known
    /// here): it is failed as missing writes from the first epoch on, so no history resyncs it from a later one.</summary>
    private static ReplicaMember FailIfRestarted(ReplicaMember member, Func<string, string?> bootOf) =>
        member.State == ReplicaState.InSync && HasRestarted(member, bootOf)
            ? member with
            {
                State = ReplicaState.Failed,
                FailedAtEpoch = FirstEpoch,
                Reason = $"its node restarted since it joined the in-sync set (boot {member.Boot}): writes in its cache may be lost",
            }
            : member;

    /// <summary>Same epoch, owner, members and last served set (records compare lists by reference; sets read back from the store are new lists).</summary>
    public bool SameAs(ReplicaSet? other) =>
        other is not null && other.Epoch == Epoch && other.Owner == Owner && other.Members.SequenceEqual(Members)
        && (LastServed is null ? other.LastServed is null : LastServed.SameAs(other.LastServed));

    private ReplicaSet Bumped(IEnumerable<ReplicaMember> members) => this with { Epoch = Epoch + 1, Members = [.. members] };
}

namespace Cairn.Replication;

/// <summary>
/// What a replica received while another node owned the volume: the regions written, in generations that start each
/// time its node sees the volume's epoch move on. If this replica is promoted, the new owner resyncs a replica that
/// had dropped out from the regions written since it dropped (invariant 3 across a failover) instead of copying it
/// in full: this replica was in sync, so it received every acknowledged write since then.
/// <para>
/// A generation is labelled with the epoch seen when it started; its node sees epochs late, so it may also hold writes
/// of the epoch that starts the next one. The regions written at epoch E or later are therefore the generations whose
/// successor starts at E or later, and the current one. Generations no replica can need any more are dropped.
/// </para>
/// </summary>
public sealed class WriteHistory
{
    private readonly Lock _lock = new();
    private readonly List<Generation> _generations;
    private readonly HashSet<string> _owners = new(StringComparer.Ordinal);
    private volatile DirtyRegionMap _current;
    private ulong _droppedThrough; // writes of this epoch and earlier may have been in dropped generations

    private sealed record Generation(ulong From, DirtyRegionMap Map)
    {
        /// <summary>Something beyond block writes happened in it (a snapshot taken or deleted, a revert): regions cannot describe it.</summary>
        public bool Unrecordable { get; set; }
    }

    /// <param name="coversFrom">The lowest epoch whose writes were all received through this history: 0 for a copy
    /// created empty on this node; one past the epoch seen when an existing copy was opened, since it may have
    /// received writes of that epoch before (in an earlier run of its node).</param>
    /// <param name="set">The volume's replica set when its node started serving this copy.</param>
    public WriteHistory(ulong coversFrom, ReplicaSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        CoversFrom = coversFrom;
        _current = new DirtyRegionMap(set.Epoch);
        _generations = [new Generation(set.Epoch, _current)];
        _owners.Add(set.Owner);
    }

    /// <summary>Writes of this epoch and later were all recorded.</summary>
    public ulong CoversFrom { get; }

    /// <summary>Records a change the replica carried out. Cheap: one lock-protected bitmap update.</summary>
    public void Mark(long offset, long length) => _current.Mark(offset, length);

    /// <summary>
    /// The replica's snapshots changed, or it was reverted: a replica that dropped out before cannot be resynced from
    /// regions, so no answer covering this moment is given (its resync must be a full copy).
    /// </summary>
    public void MarkUnrecordable()
    {
        lock (_lock)
        {
            _generations[^1].Unrecordable = true;
        }
    }

    /// <summary>
    /// The volume's replica set as its node now sees it: a newer epoch starts a generation; owners are remembered; and
    /// generations older than anything a failed replica (or one failing from now on) could need are dropped.
    /// </summary>
    public void Observe(ReplicaSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        lock (_lock)
        {
            _owners.Add(set.Owner);
            if (set.Epoch > _generations[^1].From)
            {
                _current = new DirtyRegionMap(set.Epoch);
                _generations.Add(new Generation(set.Epoch, _current));
            }
            ulong needed = set.Members.Where(m => m.State != ReplicaState.InSync && m.FailedAtEpoch != 0)
                .Select(m => m.FailedAtEpoch).DefaultIfEmpty(set.Epoch).Min();
            while (_generations.Count > 1 && _generations[1].From < needed)
            {
                _droppedThrough = Math.Max(_droppedThrough, _generations[1].From);
                _generations.RemoveAt(0);
            }
        }
    }

    /// <summary>Whether <paramref name="node"/> owned the volume while this history was kept: such a replica may hold
    /// writes its owner never sent to anyone, which no history shows, so it must be copied in full.</summary>
    public bool SawOwner(string node)
    {
        lock (_lock)
        {
            return _owners.Contains(node);
        }
    }

    /// <summary>
    /// Every region written at epoch <paramref name="epoch"/> or later, as a new map that can go on recording for the
    /// replica that left at that epoch; null when this history does not reach back that far, or when the replica's
    /// snapshots changed or it was reverted since (see <see cref="MarkUnrecordable"/>).
    /// </summary>
    public DirtyRegionMap? Since(ulong epoch)
    {
        lock (_lock)
        {
            if (epoch < CoversFrom || (_droppedThrough != 0 && epoch <= _droppedThrough))
            {
                return null;
            }
            var needed = _generations.Where((g, i) => i == _generations.Count - 1 || _generations[i + 1].From >= epoch).ToList();
            if (needed.Any(g => g.Unrecordable))
            {
                return null;
            }
            var since = new DirtyRegionMap(epoch);
            foreach (var range in needed.SelectMany(g => g.Map.Ranges()))
            {
                since.Mark(range.Offset, range.Length);
            }
            return since;
        }
    }
}

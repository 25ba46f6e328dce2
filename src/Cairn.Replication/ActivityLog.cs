namespace Cairn.Replication;

/// <summary>
/// The regions of acknowledged changes that the replicas may not have made durable yet: written since the last flush
/// every in-sync replica completed. A replica whose node crashes or loses power can lose exactly those, so when one is
/// dropped its resync record starts with them (besides what it misses from then on) — otherwise a returning replica
/// could be admitted without writes it had acknowledged and then lost.
/// <para>
/// A change marks the current map once every copy has it; a flush seals the current map before it is sent, and once
/// every in-sync replica has completed it, that map and older ones are retired (a flush covers every change completed
/// before it was sent). Retired maps are cleared and reused, so the write path allocates nothing.
/// </para>
/// <para>
/// Each map also keeps the oldest epoch its changes were sent at: a replica dropped now may have lost writes of that
/// epoch, which may be older than the one it is dropped at, and a promoted owner's <see cref="WriteHistory"/> must
/// reach back that far. An owner that opens over copies a previous owner (or an earlier run of this one) wrote to
/// cannot know what they left unflushed: until its first flush completes everywhere, a dropped replica gets no record
/// at all, so its resync is a full copy.
/// </para>
/// </summary>
internal sealed class ActivityLog(bool priorChangesUnknown = false)
{
    private readonly Lock _lock = new();
    private readonly List<(long Seal, Segment Segment)> _sealed = new(4);
    private readonly Stack<Segment> _spare = new(4);
    private volatile Segment _current = new();
    private long _seals;
    private volatile bool _priorChangesUnknown = priorChangesUnknown;

    /// <summary>One map of changes and the oldest epoch among them (<see cref="ulong.MaxValue"/> while empty).</summary>
    private sealed class Segment
    {
        public DirtyRegionMap Map { get; } = new();

        private long _oldestEpoch = -1; // as unsigned: ulong.MaxValue

        public ulong OldestEpoch => (ulong)Interlocked.Read(ref _oldestEpoch);

        public void Mark(long offset, long length, ulong epoch)
        {
            Map.Mark(offset, length);
            long seen = Interlocked.Read(ref _oldestEpoch);
            while ((ulong)seen > epoch)
            {
                long was = Interlocked.CompareExchange(ref _oldestEpoch, (long)epoch, seen);
                if (was == seen)
                {
                    return;
                }
                seen = was;
            }
        }

        public void Clear()
        {
            Map.Clear();
            Interlocked.Exchange(ref _oldestEpoch, -1);
        }
    }

    /// <summary>Whether nothing may be left unflushed: every change was covered by a flush all in-sync replicas completed.</summary>
    public bool IsEmpty
    {
        get
        {
            lock (_lock)
            {
                return !_priorChangesUnknown && _current.Map.IsEmpty && _sealed.Count == 0;
            }
        }
    }

    /// <summary>A change every copy now holds (call before acknowledging it), sent to them at <paramref name="epoch"/>.</summary>
    public void Mark(long offset, long length, ulong epoch) => _current.Mark(offset, length, epoch);

    /// <summary>A flush is about to be sent: what was marked so far is what it covers. Returns its seal for <see cref="Retire"/>.</summary>
    public long Seal()
    {
        lock (_lock)
        {
            if (_current.Map.IsEmpty)
            {
                return _seals; // nothing new: retiring up to the last seal is still right
            }
            _sealed.Add((++_seals, _current));
            _current = _spare.Count > 0 ? _spare.Pop() : new Segment();
            return _seals;
        }
    }

    /// <summary>Every in-sync replica completed the flush sealed at <paramref name="seal"/>: what it covers is durable everywhere.</summary>
    public void Retire(long seal)
    {
        lock (_lock)
        {
            _priorChangesUnknown = false; // a flush covers what the replicas held before it was sent, whoever wrote it
            while (_sealed.Count > 0 && _sealed[0].Seal <= seal)
            {
                var segment = _sealed[0].Segment;
                _sealed.RemoveAt(0);
                segment.Clear();
                _spare.Push(segment);
            }
        }
    }

    /// <summary>
    /// The oldest epoch at which a change that may not be durable on the replicas was sent; <paramref name="now"/> when
    /// there is none, and the first epoch while changes from before this owner may be unflushed (their epochs are not
    /// known here). A replica dropped now may have lost writes from that epoch on.
    /// </summary>
    public ulong OldestUnflushedEpoch(ulong now)
    {
        lock (_lock)
        {
            return _priorChangesUnknown ? Math.Min(now, ReplicaSet.FirstEpoch)
                : _sealed.Select(s => s.Segment.OldestEpoch).Append(_current.OldestEpoch).Append(now).Min();
        }
    }


    /// <summary>
    /// Marks in <paramref name="record"/> every region that may not be durable on the replicas yet. False when that is
    /// not known (changes before this owner opened, not yet covered by a flush): no record can be complete then.
    /// </summary>
    public bool TryCopyInto(DirtyRegionMap record)
    {
        lock (_lock)
        {
            if (_priorChangesUnknown)
            {
                return false;
            }
            foreach (var range in _sealed.Select(s => s.Segment.Map.Ranges()).Append(_current.Map.Ranges()).SelectMany(r => r))
            {
                record.Mark(range.Offset, range.Length);
            }
            return true;
        }
    }
}

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
/// </summary>
internal sealed class ActivityLog
{
    private readonly Lock _lock = new();
    private readonly List<(long Seal, DirtyRegionMap Map)> _sealed = new(4);
    private readonly Stack<DirtyRegionMap> _spare = new(4);
    private volatile DirtyRegionMap _current = new();
    private long _seals;

    public bool IsEmpty
    {
        get
        {
            lock (_lock)
            {
                return _current.IsEmpty && _sealed.Count == 0;
            }
        }
    }

    /// <summary>A change every copy now holds (call before acknowledging it).</summary>
    public void Mark(long offset, long length) => _current.Mark(offset, length);

    /// <summary>A flush is about to be sent: what was marked so far is what it covers. Returns its seal for <see cref="Retire"/>.</summary>
    public long Seal()
    {
        lock (_lock)
        {
            if (_current.IsEmpty)
            {
                return _seals; // nothing new: retiring up to the last seal is still right
            }
            _sealed.Add((++_seals, _current));
            _current = _spare.Count > 0 ? _spare.Pop() : new DirtyRegionMap();
            return _seals;
        }
    }

    /// <summary>Every in-sync replica completed the flush sealed at <paramref name="seal"/>: what it covers is durable everywhere.</summary>
    public void Retire(long seal)
    {
        lock (_lock)
        {
            while (_sealed.Count > 0 && _sealed[0].Seal <= seal)
            {
                var map = _sealed[0].Map;
                _sealed.RemoveAt(0);
                map.Clear();
                _spare.Push(map);
            }
        }
    }

    /// <summary>Marks in <paramref name="record"/> every region that may not be durable on the replicas yet.</summary>
    public void CopyInto(DirtyRegionMap record)
    {
        lock (_lock)
        {
            foreach (var range in _sealed.SelectMany(s => s.Map.Ranges()).Concat(_current.Ranges()))
            {
                record.Mark(range.Offset, range.Length);
            }
        }
    }
}

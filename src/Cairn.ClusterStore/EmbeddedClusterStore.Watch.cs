using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Cairn.ClusterStore;

// Watches: every committed event goes into a bounded in-memory history and, under the same lock,
// into each live watcher's queue. A watcher registers by first copying the history from its start
// revision and then joining the live fan-out, both under the lock, so no event falls in between.
public sealed partial class EmbeddedClusterStore
{
    private readonly List<WatchEvent> _history = [];
    private readonly List<Watcher> _watchers = [];
    private long _historyStartRevision = 1;

    private sealed record Watcher(string Prefix, Channel<WatchEvent> Channel);

    public IAsyncEnumerable<WatchEvent> WatchAsync(string prefix, long fromRevision, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        long from;
        lock (_lock)
        {
            ThrowIfDisposed();
            // 0 means "from now", fixed at the call, not at the first MoveNextAsync.
            from = fromRevision <= 0 ? _revision + 1 : fromRevision;
            ThrowIfCompactedLocked(from);
        }
        return WatchFrom(prefix, from, cancellationToken);
    }

    private async IAsyncEnumerable<WatchEvent> WatchFrom(string prefix, long from, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // Unbounded: control-plane event rates are tiny; a stuck consumer costs memory, never a lost event.
        var watcher = new Watcher(prefix, Channel.CreateUnbounded<WatchEvent>(new UnboundedChannelOptions { SingleReader = true }));
        lock (_lock)
        {
            ThrowIfDisposed();
            ThrowIfCompactedLocked(from);
            foreach (var e in _history)
            {
                if (e.Revision >= from && e.Kv.Key.StartsWith(prefix, StringComparison.Ordinal))
                {
                    watcher.Channel.Writer.TryWrite(e);
                }
            }
            _watchers.Add(watcher);
        }
        try
        {
            await foreach (var e in watcher.Channel.Reader.ReadAllAsync(cancellationToken))
            {
                yield return e;
            }
        }
        finally
        {
            lock (_lock)
            {
                _watchers.Remove(watcher);
            }
        }
    }

    /// <summary>Forgets the watch history before <paramref name="revision"/>, as etcd's compaction does; lets tests reach the compacted path.</summary>
    internal void CompactHistory(long revision)
    {
        lock (_lock)
        {
            _history.RemoveAll(e => e.Revision < revision);
            _historyStartRevision = Math.Max(_historyStartRevision, Math.Min(revision, _revision + 1));
        }
    }

    private void ThrowIfCompactedLocked(long from)
    {
        if (from < _historyStartRevision)
        {
            throw new RevisionCompactedException(from, _historyStartRevision);
        }
    }

    private void PublishLocked(List<WatchEvent> events)
    {
        _history.AddRange(events);
        TrimHistoryLocked();
        foreach (var watcher in _watchers)
        {
            foreach (var e in events)
            {
                if (e.Kv.Key.StartsWith(watcher.Prefix, StringComparison.Ordinal))
                {
                    watcher.Channel.Writer.TryWrite(e);
                }
            }
        }
    }

    private void TrimHistoryLocked()
    {
        int limit = Math.Max(1, _options.WatchHistoryEvents);
        if (_history.Count <= limit * 2)
        {
            return; // trim in batches so each commit stays O(1) amortised
        }
        int cut = _history.Count - limit;
        // Never split a revision: a watcher from revision R must see all of R's events or be told it is compacted.
        while (cut < _history.Count && _history[cut].Revision == _history[cut - 1].Revision)
        {
            cut++;
        }
        _history.RemoveRange(0, cut);
        _historyStartRevision = _history.Count > 0 ? _history[0].Revision : _revision + 1;
    }
}

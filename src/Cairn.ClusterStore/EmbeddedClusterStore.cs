using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ClusterStore;

/// <summary>
/// The single-node cluster store: an in-memory sorted map made durable by an append-only,
/// CRC-framed log that is fsynced once per committed transaction (control-plane writes are rare,
/// so durability beats batching here). One lock serialises everything; nothing on the data path uses it.
/// </summary>
public sealed partial class EmbeddedClusterStore : IClusterStore
{
    private readonly object _lock = new();
    private readonly SortedDictionary<string, KeyValue> _items = new(StringComparer.Ordinal);
    private readonly EmbeddedClusterStoreOptions _options;
    private readonly ILogger _logger;
    private long _revision;
    private bool _disposed;

    private EmbeddedClusterStore(string directory, EmbeddedClusterStoreOptions options)
    {
        Directory = directory;
        _options = options;
        _logger = options.Logger ?? NullLogger.Instance;
    }

    public string Directory { get; }

    public long Revision
    {
        get
        {
            lock (_lock)
            {
                return _revision;
            }
        }
    }

    /// <summary>Opens (or creates) the store in <paramref name="directory"/>, recovering from a torn log tail.</summary>
    public static EmbeddedClusterStore Open(string directory, EmbeddedClusterStoreOptions? options = null)
    {
        var store = new EmbeddedClusterStore(Path.GetFullPath(directory), options ?? new EmbeddedClusterStoreOptions());
        try
        {
            store.Load();
            store.StartLeaseSweeper();
        }
        catch
        {
            store.CloseFiles();
            throw;
        }
        return store;
    }

    public ValueTask<KeyValue?> GetAsync(string key, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            return ValueTask.FromResult(_items.GetValueOrDefault(key));
        }
    }

    public ValueTask<RangeResult> RangeAsync(string prefix, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            var items = new List<KeyValue>();
            // Ordinal order puts every key with the prefix in one contiguous run.
            foreach (var (key, kv) in _items)
            {
                int order = string.CompareOrdinal(key, 0, prefix, 0, prefix.Length);
                if (order > 0)
                {
                    break;
                }
                if (order == 0)
                {
                    items.Add(kv);
                }
            }
            return ValueTask.FromResult(new RangeResult(items, _revision));
        }
    }

    public async ValueTask<long> PutAsync(string key, ReadOnlyMemory<byte> value, long leaseId = 0, CancellationToken cancellationToken = default)
    {
        var result = await CommitAsync(Transaction.If().Then(TxnOp.Put(key, value, leaseId)), cancellationToken);
        return result.Revision;
    }

    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken = default)
    {
        var result = await CommitAsync(Transaction.If(Compare.Exists(key)).Then(TxnOp.Delete(key)), cancellationToken);
        return result.Succeeded;
    }

    public ValueTask<TransactionResult> CommitAsync(Transaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        lock (_lock)
        {
            ThrowIfDisposed();
            bool succeeded = transaction.Compares.All(c => c.Holds(_items.GetValueOrDefault(c.Key)));
            var ops = succeeded ? transaction.Success : transaction.Failure;
            CommitLocked(ops);
            return ValueTask.FromResult(new TransactionResult(succeeded, _revision));
        }
    }

    /// <summary>Validates, persists, applies and publishes one transaction's ops as one revision. Caller holds the lock.</summary>
    private void CommitLocked(IReadOnlyList<TxnOp> ops)
    {
        var effective = EffectiveOpsLocked(ops);
        if (effective.Count == 0)
        {
            return; // like etcd: a transaction that changes nothing does not bump the revision
        }
        long revision = _revision + 1;
        AppendToLogLocked(revision, effective); // durable before visible: a reader never sees a write a crash could lose
        var events = ApplyLocked(revision, effective);
        PublishLocked(events);
        CompactIfLargeLocked();
    }

    /// <summary>Drops deletes of missing keys and checks leases, so the log records only real changes.</summary>
    private List<TxnOp> EffectiveOpsLocked(IReadOnlyList<TxnOp> ops)
    {
        var effective = new List<TxnOp>(ops.Count);
        var present = new HashSet<string>(StringComparer.Ordinal);
        var deleted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var op in ops)
        {
            switch (op)
            {
                case PutOp put:
                    if (put.LeaseId != 0 && !_leases.ContainsKey(put.LeaseId))
                    {
                        throw new LeaseNotFoundException(put.LeaseId);
                    }
                    present.Add(put.Key);
                    deleted.Remove(put.Key);
                    effective.Add(put);
                    break;
                case DeleteOp delete:
                    if ((_items.ContainsKey(delete.Key) || present.Contains(delete.Key)) && !deleted.Contains(delete.Key))
                    {
                        deleted.Add(delete.Key);
                        present.Remove(delete.Key);
                        effective.Add(delete);
                    }
                    break;
                default:
                    throw new ArgumentException($"unknown transaction op {op.GetType().Name}", nameof(ops));
            }
        }
        return effective;
    }

    /// <summary>Applies ops at <paramref name="revision"/>; shared by live commits and log replay so both build the same state.</summary>
    private List<WatchEvent> ApplyLocked(long revision, IReadOnlyList<TxnOp> ops)
    {
        var events = new List<WatchEvent>(ops.Count);
        foreach (var op in ops)
        {
            if (op is PutOp put)
            {
                var previous = _items.GetValueOrDefault(put.Key);
                var kv = new KeyValue(put.Key, put.Value, previous?.CreateRevision ?? revision, revision, (previous?.Version ?? 0) + 1, put.LeaseId);
                _items[put.Key] = kv;
                MoveKeyBetweenLeasesLocked(put.Key, previous?.LeaseId ?? 0, put.LeaseId);
                events.Add(new WatchEvent(WatchEventType.Put, kv));
            }
            else if (op is DeleteOp delete && _items.Remove(delete.Key, out var removed))
            {
                MoveKeyBetweenLeasesLocked(delete.Key, removed.LeaseId, 0);
                events.Add(new WatchEvent(WatchEventType.Delete, removed with { Value = [], ModRevision = revision }));
            }
        }
        _revision = revision;
        return events;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public ValueTask DisposeAsync()
    {
        ITimer? sweeper;
        lock (_lock)
        {
            if (_disposed)
            {
                return ValueTask.CompletedTask;
            }
            _disposed = true;
            sweeper = _leaseSweeper;
            foreach (var watcher in _watchers)
            {
                watcher.Channel.Writer.TryComplete();
            }
            _watchers.Clear();
            CloseFiles();
        }
        sweeper?.Dispose();
        return ValueTask.CompletedTask;
    }
}

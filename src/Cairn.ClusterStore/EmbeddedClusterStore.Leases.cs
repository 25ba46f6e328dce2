using Microsoft.Extensions.Logging;

namespace Cairn.ClusterStore;

// Leases live in memory only. Like etcd after a long outage, a restart means every lease has expired:
// keys attached to a lease are deleted when the store opens.
public sealed partial class EmbeddedClusterStore
{
    private readonly Dictionary<long, LeaseState> _leases = [];
    private ITimer? _leaseSweeper;

    private sealed class LeaseState(long id, TimeSpan ttl, DateTimeOffset expiresAt)
    {
        public long Id { get; } = id;
        public TimeSpan Ttl { get; } = ttl;
        public DateTimeOffset ExpiresAt { get; set; } = expiresAt;
        public HashSet<string> Keys { get; } = new(StringComparer.Ordinal);

        public Lease ToLease() => new(Id, Ttl, ExpiresAt);
    }

    public ValueTask<Lease> GrantLeaseAsync(TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        lock (_lock)
        {
            ThrowIfDisposed();
            long id;
            do
            {
                // Random rather than counted: ids must not repeat across restarts, and leases are not persisted.
                id = Random.Shared.NextInt64(1, long.MaxValue);
            }
            while (_leases.ContainsKey(id));
            var lease = new LeaseState(id, ttl, _options.TimeProvider.GetUtcNow() + ttl);
            _leases[id] = lease;
            return ValueTask.FromResult(lease.ToLease());
        }
    }

    public ValueTask<Lease> KeepAliveAsync(long leaseId, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            ExpireLeasesLocked();
            if (!_leases.TryGetValue(leaseId, out var lease))
            {
                throw new LeaseNotFoundException(leaseId);
            }
            lease.ExpiresAt = _options.TimeProvider.GetUtcNow() + lease.Ttl;
            return ValueTask.FromResult(lease.ToLease());
        }
    }

    public ValueTask<bool> RevokeLeaseAsync(long leaseId, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            if (!_leases.TryGetValue(leaseId, out var lease))
            {
                return ValueTask.FromResult(false);
            }
            EndLeaseLocked(lease);
            return ValueTask.FromResult(true);
        }
    }

    /// <summary>Ends every lease whose time is up; the sweeper calls this, tests call it after moving a fake clock.</summary>
    internal void ExpireLeases()
    {
        lock (_lock)
        {
            if (!_disposed)
            {
                ExpireLeasesLocked();
            }
        }
    }

    private void ExpireLeasesLocked()
    {
        var now = _options.TimeProvider.GetUtcNow();
        foreach (var lease in _leases.Values.Where(l => l.ExpiresAt <= now).ToList())
        {
            _logger.LogInformation("lease {LeaseId} expired; deleting its {Keys} keys", lease.Id, lease.Keys.Count);
            EndLeaseLocked(lease);
        }
    }

    private void EndLeaseLocked(LeaseState lease)
    {
        _leases.Remove(lease.Id);
        var deletes = lease.Keys.Order(StringComparer.Ordinal).Select(TxnOp.Delete).ToList();
        try
        {
            CommitLocked(deletes);
        }
        catch (IOException e)
        {
            // The keys stay until the next open, which drops every leased key anyway.
            _logger.LogError(e, "could not persist deletion of the keys of lease {LeaseId}", lease.Id);
        }
    }

    private void MoveKeyBetweenLeasesLocked(string key, long fromLease, long toLease)
    {
        if (fromLease == toLease)
        {
            return;
        }
        if (fromLease != 0 && _leases.TryGetValue(fromLease, out var from))
        {
            from.Keys.Remove(key);
        }
        if (toLease != 0 && _leases.TryGetValue(toLease, out var to))
        {
            to.Keys.Add(key);
        }
    }

    private void DropLeasedKeysLocked()
    {
        var leased = _items.Values.Where(kv => kv.LeaseId != 0).Select(kv => TxnOp.Delete(kv.Key)).ToList();
        if (leased.Count > 0)
        {
            _logger.LogInformation("dropping {Keys} keys whose leases ended with the previous run", leased.Count);
            CommitLocked(leased);
        }
    }

    private void StartLeaseSweeper()
    {
        var interval = _options.LeaseSweepInterval;
        _leaseSweeper = _options.TimeProvider.CreateTimer(_ => ExpireLeases(), null, interval, interval);
    }
}

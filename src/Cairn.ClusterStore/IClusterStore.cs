namespace Cairn.ClusterStore;

/// <summary>
/// The coordination store every control-plane component talks to. Modelled on etcd v3 so that the
/// embedded single-node implementation and a later etcd-backed one are interchangeable:
/// a global revision that every committed write bumps, compare-and-swap transactions on a key's
/// mod revision, watches that resume from a revision, and leases whose keys vanish on expiry.
/// </summary>
public interface IClusterStore : IAsyncDisposable
{
    /// <summary>
    /// The revision of the last committed write (0 for an empty, never-written store). For a remote store
    /// (etcd) this is the newest revision this client has observed in any response, which may lag writes by others.
    /// </summary>
    long Revision { get; }

    ValueTask<KeyValue?> GetAsync(string key, CancellationToken cancellationToken = default);

    /// <summary>All keys starting with <paramref name="prefix"/>, in ordinal key order, read at one revision.</summary>
    ValueTask<RangeResult> RangeAsync(string prefix, CancellationToken cancellationToken = default);

    /// <summary>Writes a key; returns the revision of the write. <paramref name="leaseId"/> 0 = no lease.</summary>
    ValueTask<long> PutAsync(string key, ReadOnlyMemory<byte> value, long leaseId = 0, CancellationToken cancellationToken = default);

    /// <summary>Deletes a key; returns true when it existed.</summary>
    ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken = default);

    /// <summary>If every compare holds, applies <see cref="Transaction.Success"/>, else <see cref="Transaction.Failure"/>; atomically, as one revision.</summary>
    ValueTask<TransactionResult> CommitAsync(Transaction transaction, CancellationToken cancellationToken = default);

    /// <summary>
    /// Streams changes to keys under <paramref name="prefix"/> with revision &gt;= <paramref name="fromRevision"/>
    /// (0 = only changes after the call; for a remote store, after the newest revision this client has observed). Read with <see cref="RangeAsync"/>, then watch from
    /// <see cref="RangeResult.Revision"/> + 1 to see every later change exactly once.
    /// Throws <see cref="RevisionCompactedException"/> when the history no longer holds <paramref name="fromRevision"/>
    /// (at the call or at the first <c>MoveNextAsync</c>, or later if a resumed watch finds its next revision compacted).
    /// A remote store reconnects a broken watch by itself and resumes after the last delivered revision, so no event
    /// is lost or repeated; it throws <see cref="ClusterStoreUnavailableException"/> only when it stays unreachable.
    /// </summary>
    IAsyncEnumerable<WatchEvent> WatchAsync(string prefix, long fromRevision, CancellationToken cancellationToken = default);

    ValueTask<Lease> GrantLeaseAsync(TimeSpan ttl, CancellationToken cancellationToken = default);

    /// <summary>Pushes a lease's expiry out by its TTL. Throws <see cref="LeaseNotFoundException"/> when it has already expired.</summary>
    ValueTask<Lease> KeepAliveAsync(long leaseId, CancellationToken cancellationToken = default);

    /// <summary>Ends a lease now, deleting its keys. Returns false when it did not exist.</summary>
    ValueTask<bool> RevokeLeaseAsync(long leaseId, CancellationToken cancellationToken = default);
}

/// <summary>A key's value and its revisions, as etcd reports them.</summary>
/// <param name="CreateRevision">Revision that created the key (since its last deletion).</param>
/// <param name="ModRevision">Revision of the last write to the key: the value to compare-and-swap on.</param>
/// <param name="Version">Writes since creation, starting at 1.</param>
/// <param name="LeaseId">Lease the key is attached to, 0 for none.</param>
public sealed record KeyValue(string Key, byte[] Value, long CreateRevision, long ModRevision, long Version, long LeaseId);

public sealed record RangeResult(IReadOnlyList<KeyValue> Items, long Revision);

public enum WatchEventType
{
    Put,
    Delete,
}

/// <summary>One change. For a delete, <see cref="KeyValue.Value"/> is empty and ModRevision is the delete's revision.</summary>
public sealed record WatchEvent(WatchEventType Type, KeyValue Kv)
{
    public long Revision => Kv.ModRevision;
}

public sealed record Lease(long Id, TimeSpan Ttl, DateTimeOffset ExpiresAt);

public sealed class RevisionCompactedException(long requested, long oldestAvailable)
    : Exception($"revision {requested} has been compacted; the oldest revision that can be watched is {oldestAvailable}; range again and watch from its revision + 1")
{
    public long OldestAvailableRevision { get; } = oldestAvailable;
}

public sealed class LeaseNotFoundException(long leaseId)
    : Exception($"lease {leaseId} does not exist or has expired");

/// <summary>
/// No store endpoint answered in time. Thrown by remote stores (etcd) instead of hanging; names every endpoint tried and
/// why it failed. When <see cref="OutcomeUnknown"/> is set, a write reached a server but its answer was lost: it may or
/// may not have been applied, so read back (or compare on mod revision) before retrying.
/// </summary>
public sealed class ClusterStoreUnavailableException(string message, IReadOnlyList<string> endpoints, bool outcomeUnknown = false, Exception? inner = null)
    : Exception(message, inner)
{
    public IReadOnlyList<string> Endpoints { get; } = endpoints;

    public bool OutcomeUnknown { get; } = outcomeUnknown;
}

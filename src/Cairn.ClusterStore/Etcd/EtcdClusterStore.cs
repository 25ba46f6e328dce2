using System.Text;
using Cairn.ClusterStore.Etcd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ClusterStore;

/// <summary>
/// The cluster store on a real etcd (3.4+) cluster, spoken to through etcd's v3 JSON gateway over HTTP
/// (the gRPC client libraries are not available to Cairn's build). Keys are UTF-8; values are opaque bytes.
/// Reads are linearizable (etcd's default). Calls fail over between endpoints and never wait longer than
/// <see cref="EtcdClusterStoreOptions.RequestTimeout"/> per endpoint; when none answers they throw
/// <see cref="ClusterStoreUnavailableException"/>. Watches reconnect by themselves and resume after the last
/// revision they delivered.
/// </summary>
/// <remarks>
/// Differences from the embedded store that callers may notice: <see cref="Revision"/> is the newest revision this
/// client has seen; a watch from revision 0 starts after that revision, or, on a client that has seen none yet, at
/// etcd's revision when the watch is created (the first <c>MoveNextAsync</c>) — range first and watch from its revision + 1
/// to be exact; lease TTLs are whole seconds and etcd may raise a short TTL to its minimum; etcd rejects a
/// transaction that writes the same key twice (an <see cref="InvalidOperationException"/>).
/// </remarks>
public sealed partial class EtcdClusterStore : IClusterStore
{
    private readonly EtcdTransport _transport;
    private readonly EtcdClusterStoreOptions _options;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _disposed = new();
    private long _revision;

    public EtcdClusterStore(IReadOnlyList<Uri> endpoints, EtcdClusterStoreOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        _options = options ?? new EtcdClusterStoreOptions();
        _logger = _options.Logger ?? NullLogger.Instance;
        _transport = new EtcdTransport(endpoints, _options, _logger);
    }

    /// <summary>Opens a store on <c>etcd://host1:2379,host2:2379</c>. Does not connect: the first call does.</summary>
    public static EtcdClusterStore Open(string spec, EtcdClusterStoreOptions? options = null) =>
        new(ClusterStoreFactory.ParseEtcdEndpoints(spec), options);

    public IReadOnlyList<Uri> Endpoints => _transport.Endpoints;

    public long Revision => Interlocked.Read(ref _revision);

    public async ValueTask<KeyValue?> GetAsync(string key, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        var response = await PostAsync("/v3/kv/range", new RangeRequest { Key = Utf8(key) },
            EtcdJsonContext.Default.RangeRequest, EtcdJsonContext.Default.RangeResponse, idempotent: true, cancellationToken);
        Observe(response.Header);
        return response.Kvs is { Count: > 0 } kvs ? ToKeyValue(kvs[0]) : null;
    }

    public async ValueTask<RangeResult> RangeAsync(string prefix, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var (key, end) = PrefixRange(prefix);
        var response = await PostAsync("/v3/kv/range", new RangeRequest { Key = key, RangeEnd = end },
            EtcdJsonContext.Default.RangeRequest, EtcdJsonContext.Default.RangeResponse, idempotent: true, cancellationToken);
        long revision = Observe(response.Header);
        // etcd sorts by key bytes; UTF-8 byte order equals ordinal order except around surrogates, which keys do not use.
        var items = response.Kvs?.Select(ToKeyValue).ToList() ?? [];
        return new RangeResult(items, revision);
    }

    public async ValueTask<long> PutAsync(string key, ReadOnlyMemory<byte> value, long leaseId = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        try
        {
            var response = await PostAsync("/v3/kv/put", new PutRequest { Key = Utf8(key), Value = value.ToArray(), Lease = leaseId == 0 ? null : leaseId },
                EtcdJsonContext.Default.PutRequest, EtcdJsonContext.Default.PutResponse, idempotent: false, cancellationToken);
            return Observe(response.Header);
        }
        catch (EtcdErrorException e) when (e.IsLeaseNotFound)
        {
            throw new LeaseNotFoundException(leaseId);
        }
    }

    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        var response = await PostAsync("/v3/kv/deleterange", new DeleteRangeRequest { Key = Utf8(key) },
            EtcdJsonContext.Default.DeleteRangeRequest, EtcdJsonContext.Default.DeleteRangeResponse, idempotent: false, cancellationToken);
        Observe(response.Header);
        return response.Deleted > 0;
    }

    public async ValueTask<TransactionResult> CommitAsync(Transaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        var request = new TxnRequest
        {
            Compare = [.. transaction.Compares.Select(ToEtcd)],
            Success = [.. transaction.Success.Select(ToEtcd)],
            Failure = [.. transaction.Failure.Select(ToEtcd)],
        };
        try
        {
            var response = await PostAsync("/v3/kv/txn", request, EtcdJsonContext.Default.TxnRequest, EtcdJsonContext.Default.TxnResponse,
                idempotent: false, cancellationToken);
            return new TransactionResult(response.Succeeded, Observe(response.Header));
        }
        catch (EtcdErrorException e) when (e.IsLeaseNotFound)
        {
            // The branch that ran named a lease that is gone; etcd does not say which, so name the first one.
            long lease = transaction.Success.Concat(transaction.Failure).OfType<PutOp>().Select(p => p.LeaseId).FirstOrDefault(l => l != 0);
            throw new LeaseNotFoundException(lease);
        }
    }

    /// <summary>Asks etcd to forget history before <paramref name="revision"/> (watches from earlier revisions then fail).</summary>
    internal async Task CompactAsync(long revision, CancellationToken cancellationToken = default)
    {
        var response = await PostAsync("/v3/kv/compaction", new CompactionRequest { Revision = revision, Physical = true },
            EtcdJsonContext.Default.CompactionRequest, EtcdJsonContext.Default.CompactionResponse, idempotent: true, cancellationToken);
        Observe(response.Header);
    }

    private async Task<TResponse> PostAsync<TRequest, TResponse>(string path, TRequest request,
        System.Text.Json.Serialization.Metadata.JsonTypeInfo<TRequest> requestType,
        System.Text.Json.Serialization.Metadata.JsonTypeInfo<TResponse> responseType, bool idempotent, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        try
        {
            return await _transport.PostAsync(path, request, requestType, responseType, idempotent, cancellationToken);
        }
        catch (EtcdErrorException e) when (!e.IsLeaseNotFound)
        {
            throw new InvalidOperationException(e.Message, e);
        }
    }

    /// <summary>Raises <see cref="Revision"/> to the header's revision and returns that revision.</summary>
    private long Observe(EtcdHeader? header)
    {
        long revision = header?.Revision ?? 0;
        long seen = Interlocked.Read(ref _revision);
        while (revision > seen)
        {
            long previous = Interlocked.CompareExchange(ref _revision, revision, seen);
            if (previous == seen)
            {
                break;
            }
            seen = previous;
        }
        return revision;
    }

    private static EtcdCompare ToEtcd(Compare compare)
    {
        var result = new EtcdCompare
        {
            Key = Utf8(compare.Key),
            Result = compare.Op switch
            {
                CompareOp.Equal => "EQUAL",
                CompareOp.NotEqual => "NOT_EQUAL",
                CompareOp.Less => "LESS",
                CompareOp.Greater => "GREATER",
                _ => throw new ArgumentException($"unknown compare op {compare.Op}", nameof(compare)),
            },
        };
        switch (compare.Target)
        {
            case CompareTarget.ModRevision:
                result.Target = "MOD";
                result.ModRevision = compare.Value;
                break;
            case CompareTarget.CreateRevision:
                result.Target = "CREATE";
                result.CreateRevision = compare.Value;
                break;
            case CompareTarget.Version:
                result.Target = "VERSION";
                result.Version = compare.Value;
                break;
            default:
                throw new ArgumentException($"unknown compare target {compare.Target}", nameof(compare));
        }
        return result;
    }

    private static EtcdRequestOp ToEtcd(TxnOp op) => op switch
    {
        PutOp put => new EtcdRequestOp { RequestPut = new PutRequest { Key = Utf8(put.Key), Value = put.Value, Lease = put.LeaseId == 0 ? null : put.LeaseId } },
        DeleteOp delete => new EtcdRequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = Utf8(delete.Key) } },
        _ => throw new ArgumentException($"unknown transaction op {op.GetType().Name}", nameof(op)),
    };

    private static KeyValue ToKeyValue(EtcdKv kv) =>
        new(Encoding.UTF8.GetString(kv.Key ?? []), kv.Value ?? [], kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease);

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>etcd's [key, range_end) for "every key starting with prefix"; the empty prefix is the whole keyspace.</summary>
    internal static (byte[] Key, byte[] RangeEnd) PrefixRange(string prefix)
    {
        byte[] key = Utf8(prefix);
        if (key.Length == 0)
        {
            return ([0], [0]); // etcd: key "\0" with range_end "\0" means all keys
        }
        byte[] end = (byte[])key.Clone();
        for (int i = end.Length - 1; i >= 0; i--)
        {
            if (end[i] < 0xff)
            {
                end[i]++;
                return (key, end[..(i + 1)]);
            }
        }
        return (key, [0]); // all 0xff: everything from key on
    }

    public ValueTask DisposeAsync()
    {
        if (!_disposed.IsCancellationRequested)
        {
            _disposed.Cancel(); // ends every watch
            _transport.Dispose();
        }
        return ValueTask.CompletedTask;
    }
}

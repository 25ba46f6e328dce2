using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Cairn.ClusterStore.Etcd;
using Microsoft.Extensions.Logging;

namespace Cairn.ClusterStore;

// Watches: one POST /v3/watch per watcher whose response streams newline-delimited {"result":{...}} lines.
// The first line confirms creation; later lines carry the events of whole revisions, in order. The watcher
// remembers the next revision it owes its consumer; when the stream breaks (server gone, connection cut)
// it reopens the watch from that revision on any endpoint, so nothing is lost or repeated.
public sealed partial class EtcdClusterStore
{
    private readonly ConcurrentDictionary<HttpResponseMessage, byte> _liveStreams = new();
    private long _watchResumptions;

    /// <summary>How many times a watch has been reopened after losing its stream (for tests and diagnostics).</summary>
    internal long WatchResumptions => Interlocked.Read(ref _watchResumptions);

    public IAsyncEnumerable<WatchEvent> WatchAsync(string prefix, long fromRevision, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        // 0 means "after the call". Without a round trip here, the best fixed point is the newest revision this client
        // has seen, so a watcher never misses its own client's later writes; with nothing seen yet, etcd's "now".
        long from = fromRevision > 0 ? fromRevision : Revision > 0 ? Revision + 1 : 0;
        return WatchFrom(prefix, from, fromNow: fromRevision <= 0, cancellationToken);
    }

    /// <summary>Cuts every live watch stream as a network failure would; the watchers reconnect and resume. For tests.</summary>
    internal void AbortWatchStreams()
    {
        foreach (var response in _liveStreams.Keys)
        {
            response.Dispose();
        }
    }

    private async IAsyncEnumerable<WatchEvent> WatchFrom(string prefix, long from, bool fromNow, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposed.Token);
        var token = linked.Token;
        var (key, rangeEnd) = PrefixRange(prefix);
        long next = from; // the first revision not yet delivered; 0 = etcd's current revision + 1
        bool delivered = false;
        var backoff = TimeSpan.FromMilliseconds(100);
        DateTimeOffset? brokenSince = null;
        string? lastFailure = null;
        int attempts = 0;
        while (true)
        {
            if (StoppedByDispose(cancellationToken))
            {
                yield break;
            }
            token.ThrowIfCancellationRequested();
            var opened = await TryOpenWatchAsync(key, rangeEnd, next, token);
            if (opened.Stream is null)
            {
                lastFailure = opened.Failure;
                brokenSince ??= DateTimeOffset.UtcNow;
                if (DateTimeOffset.UtcNow - brokenSince > _options.WatchReconnectTimeout)
                {
                    throw new ClusterStoreUnavailableException(
                        $"watch on '{prefix}' could not reconnect for {_options.WatchReconnectTimeout.TotalSeconds:0.#} s, resuming at revision {next}: {lastFailure}",
                        [.. Endpoints.Select(e => e.ToString())]);
                }
                try
                {
                    await Task.Delay(backoff, token);
                }
                catch (OperationCanceledException) when (StoppedByDispose(cancellationToken))
                {
                }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
                continue;
            }
            var stream = opened.Stream;
            if (attempts++ > 0)
            {
                Interlocked.Increment(ref _watchResumptions);
            }
            try
            {
                if (next == 0)
                {
                    next = stream.CreatedRevision + 1;
                }
                brokenSince = null;
                backoff = TimeSpan.FromMilliseconds(100);
                while (true)
                {
                    var response = await stream.ReadAsync(token);
                    if (response is null)
                    {
                        if (StoppedByDispose(cancellationToken))
                        {
                            yield break; // the store was disposed: end quietly, as the embedded store's watches do
                        }
                        _logger.LogInformation("watch on {Prefix} lost its stream to {Endpoint}; resuming at revision {Next}", prefix, stream.Endpoint, next);
                        _transport.Demote(stream.Endpoint);
                        break;
                    }
                    if (response.Canceled)
                    {
                        if (response.CompactRevision > 0)
                        {
                            if (fromNow && !delivered)
                            {
                                // "From now" started at a revision this client saw long ago; now is still fine.
                                next = 0;
                                break;
                            }
                            throw new RevisionCompactedException(next, response.CompactRevision);
                        }
                        _logger.LogInformation("etcd canceled the watch on {Prefix} ({Reason}); resuming at revision {Next}", prefix, response.CancelReason, next);
                        break;
                    }
                    if (response.Events is { Count: > 0 } events)
                    {
                        foreach (var e in events)
                        {
                            var watchEvent = ToWatchEvent(e);
                            Observe(new EtcdHeader { Revision = watchEvent.Revision });
                            delivered = true;
                            yield return watchEvent;
                        }
                        // A response holds whole revisions, so everything up to its last revision has been delivered.
                        next = Math.Max(next, events[^1].Kv!.ModRevision + 1);
                    }
                    else if (!response.Created && response.Header?.Revision > 0)
                    {
                        // Progress notification: sent only when the watcher is caught up, so nothing under the prefix is
                        // pending below it. Moving on keeps a resumed idle watch clear of compaction.
                        next = Math.Max(next, response.Header.Revision + 1);
                    }
                }
            }
            finally
            {
                await stream.DisposeAsync();
            }
        }
    }

    /// <summary>The store was disposed under a watch its caller has not canceled: the watch ends quietly.</summary>
    private bool StoppedByDispose(CancellationToken callerToken) => _disposed.IsCancellationRequested && !callerToken.IsCancellationRequested;

    private async Task<(WatchStream? Stream, string? Failure)> TryOpenWatchAsync(byte[] key, byte[] rangeEnd, long start, CancellationToken token)
    {
        var request = new WatchRequest
        {
            CreateRequest = new WatchCreateRequest
            {
                Key = key,
                RangeEnd = rangeEnd,
                StartRevision = start > 0 ? start : null,
                ProgressNotify = true,
                PrevKv = true, // so a delete event can say what it deleted, like the embedded store's
            },
        };
        byte[] body = JsonSerializer.SerializeToUtf8Bytes(request, EtcdJsonContext.Default.WatchRequest);
        HttpResponseMessage response;
        Uri endpoint;
        try
        {
            (response, endpoint) = await _transport.OpenStreamAsync("/v3/watch", body, token);
        }
        catch (ClusterStoreUnavailableException e)
        {
            return (null, e.Message);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException && _disposed.IsCancellationRequested)
        {
            return (null, "the store was disposed");
        }
        var stream = new WatchStream(this, response, endpoint);
        try
        {
            // The creation confirmation must come within the request deadline; events may then take forever.
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(token);
            deadline.CancelAfter(_options.RequestTimeout);
            var created = await stream.ReadAsync(deadline.Token);
            if (created is { Created: true })
            {
                stream.CreatedRevision = created.Header?.Revision ?? 0;
                Observe(created.Header);
                return (stream, null);
            }
            if (created is { Canceled: true, CompactRevision: > 0 })
            {
                // Refused outright because the start revision is compacted: let the caller read the refusal and say so.
                stream.Unread(created);
                return (stream, null);
            }
            await stream.DisposeAsync();
            _transport.Demote(endpoint);
            return (null, $"{endpoint}: the watch was not confirmed");
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            await stream.DisposeAsync();
            _transport.Demote(endpoint);
            return (null, $"{endpoint}: no watch confirmation within {_options.RequestTimeout.TotalSeconds:0.#} s");
        }
        catch
        {
            await stream.DisposeAsync();
            throw;
        }
    }

    private static WatchEvent ToWatchEvent(EtcdEvent e)
    {
        var kv = e.Kv ?? throw new InvalidDataException("etcd sent a watch event without a key");
        if (string.Equals(e.Type, "DELETE", StringComparison.Ordinal))
        {
            var before = e.PrevKv;
            return new WatchEvent(WatchEventType.Delete, new KeyValue(Encoding.UTF8.GetString(kv.Key ?? []), [],
                before?.CreateRevision ?? 0, kv.ModRevision, before?.Version ?? 0, before?.Lease ?? 0));
        }
        return new WatchEvent(WatchEventType.Put, ToKeyValue(kv));
    }

    /// <summary>One open watch response: reads its lines; a broken or ended stream reads as null.</summary>
    private sealed class WatchStream(EtcdClusterStore owner, HttpResponseMessage response, Uri endpoint) : IAsyncDisposable
    {
        private StreamReader? _reader;

        public Uri Endpoint { get; } = endpoint;

        public long CreatedRevision { get; set; }

        private WatchResponse? _unread;

        public void Unread(WatchResponse response) => _unread = response;

        public async Task<WatchResponse?> ReadAsync(CancellationToken token)
        {
            if (_unread is { } pending)
            {
                _unread = null;
                return pending;
            }
            try
            {
                if (_reader is null)
                {
                    owner._liveStreams.TryAdd(response, 0);
                    _reader = new StreamReader(await response.Content.ReadAsStreamAsync(token), Encoding.UTF8);
                }
                while (true)
                {
                    string? line = await _reader.ReadLineAsync(token);
                    if (line is null)
                    {
                        return null;
                    }
                    if (line.Length == 0)
                    {
                        continue;
                    }
                    var parsed = JsonSerializer.Deserialize(line, EtcdJsonContext.Default.WatchLine);
                    if (parsed?.Error is { } error)
                    {
                        owner._logger.LogInformation("etcd watch stream from {Endpoint} ended with {Code}: {Message}", Endpoint, error.GrpcCode, error.Message);
                        return null;
                    }
                    if (parsed?.Result is { } result)
                    {
                        return result;
                    }
                }
            }
            catch (Exception e) when ((!token.IsCancellationRequested
                                          && e is IOException or HttpRequestException or ObjectDisposedException or JsonException or ArgumentOutOfRangeException)
                                      || (e is OperationCanceledException && owner._disposed.IsCancellationRequested))
            {
                // JsonException: a line cut off by a dying connection. ArgumentOutOfRangeException: HttpClient's chunked
                // decoder reading a chunk header cut off the same way (seen in CI when a test cut the connection).
                return null;
            }
        }

        public ValueTask DisposeAsync()
        {
            owner._liveStreams.TryRemove(response, out _);
            _reader?.Dispose();
            response.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

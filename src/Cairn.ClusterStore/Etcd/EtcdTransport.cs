using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.Extensions.Logging;

namespace Cairn.ClusterStore.Etcd;

/// <summary>etcd answered with a gRPC error (lease not found, invalid argument, ...), not a transport failure.</summary>
internal sealed class EtcdErrorException(string endpoint, string path, int grpcCode, string message)
    : Exception($"etcd at {endpoint} refused {path}: {message} (gRPC code {grpcCode})")
{
    public int GrpcCode { get; } = grpcCode;

    public string EtcdMessage { get; } = message;

    public bool IsLeaseNotFound => EtcdMessage.Contains("lease not found", StringComparison.Ordinal);
}

/// <summary>
/// POSTs JSON to etcd's v3 gateway with endpoint failover. Every call is bounded: connects by
/// <see cref="EtcdClusterStoreOptions.ConnectTimeout"/>, whole requests by <see cref="EtcdClusterStoreOptions.RequestTimeout"/>.
/// A request that never reached a server (connection refused, connect timeout) is tried on the next endpoint.
/// A write whose answer was lost after it was sent is not retried (it might have been applied: a repeated CAS would
/// report failure for its own success); it fails with <see cref="ClusterStoreUnavailableException.OutcomeUnknown"/>.
/// </summary>
internal sealed class EtcdTransport : IDisposable
{
    private const int GrpcUnavailable = 14;

    private readonly HttpClient _http;
    private readonly Uri[] _endpoints;
    private readonly EtcdClusterStoreOptions _options;
    private readonly ILogger _logger;
    private int _preferred; // the endpoint that last answered; calls start there

    public EtcdTransport(IReadOnlyList<Uri> endpoints, EtcdClusterStoreOptions options, ILogger logger)
    {
        if (endpoints.Count == 0)
        {
            throw new ArgumentException("at least one etcd endpoint is needed", nameof(endpoints));
        }
        _endpoints = [.. endpoints];
        _options = options;
        _logger = logger;
        var connectTimeout = options.ConnectTimeout;
        var handler = new SocketsHttpHandler
        {
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
            // Our own connect: bounded, and with TCP keep-alive so a watch on a silently dead peer breaks within ~20 s.
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
                    socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 10);
                    socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 3);
                    socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    timeout.CancelAfter(connectTimeout);
                    try
                    {
                        await socket.ConnectAsync(context.DnsEndPoint, timeout.Token);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        // Surfaces as HttpRequestError.ConnectionError: nothing was sent, so the next endpoint may be tried.
                        throw new SocketException((int)SocketError.TimedOut);
                    }
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan }; // per-call deadlines below; watches stream forever
    }

    public IReadOnlyList<Uri> Endpoints => _endpoints;

    public async Task<TResponse> PostAsync<TRequest, TResponse>(string path, TRequest request, JsonTypeInfo<TRequest> requestType,
        JsonTypeInfo<TResponse> responseType, bool idempotent, CancellationToken cancellationToken)
    {
        byte[] body = JsonSerializer.SerializeToUtf8Bytes(request, requestType);
        var failures = new List<string>();
        int start = Volatile.Read(ref _preferred);
        for (int i = 0; i < _endpoints.Length; i++)
        {
            int index = (start + i) % _endpoints.Length;
            var endpoint = _endpoints[index];
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(_options.RequestTimeout);
            bool sent = false;
            try
            {
                using var content = new ByteArrayContent(body);
                content.Headers.ContentType = new("application/json");
                using var response = await _http.PostAsync(new Uri(endpoint, path), content, deadline.Token);
                sent = true;
                byte[] payload = await response.Content.ReadAsByteArrayAsync(deadline.Token);
                if (response.IsSuccessStatusCode)
                {
                    Volatile.Write(ref _preferred, index);
                    return JsonSerializer.Deserialize(payload, responseType)
                        ?? throw new InvalidOperationException($"etcd at {endpoint} sent an empty answer to {path}");
                }
                var error = ParseError(payload, response.StatusCode);
                if (error.Code == GrpcUnavailable && idempotent)
                {
                    // e.g. "no leader": this member cannot serve; another one may.
                    failures.Add($"{endpoint}: {error.Message}");
                    continue;
                }
                if (error.Code == GrpcUnavailable)
                {
                    throw new ClusterStoreUnavailableException(
                        $"etcd at {endpoint} could not complete {path}: {error.Message}; the write may or may not have been applied",
                        Names(), outcomeUnknown: true);
                }
                throw new EtcdErrorException(endpoint.ToString(), path, error.Code, error.Message ?? error.Error ?? response.StatusCode.ToString());
            }
            catch (HttpRequestException e) when (!sent && e.HttpRequestError == HttpRequestError.ConnectionError)
            {
                failures.Add($"{endpoint}: {Describe(e)}");
            }
            catch (Exception e) when (e is HttpRequestException or IOException
                                      || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                string why = e is OperationCanceledException ? $"no answer within {_options.RequestTimeout.TotalSeconds:0.#} s" : Describe(e);
                if (!idempotent)
                {
                    throw new ClusterStoreUnavailableException(
                        $"etcd at {endpoint} did not answer {path} ({why}); the write may or may not have been applied",
                        Names(), outcomeUnknown: true, e);
                }
                failures.Add($"{endpoint}: {why}");
            }
            _logger.LogDebug("etcd endpoint {Endpoint} failed for {Path}: {Failure}", endpoint, path, failures[^1]);
        }
        throw Unavailable(failures);
    }

    /// <summary>
    /// Opens a streaming call (watch) on the first endpoint that accepts it, starting at the preferred one, and
    /// returns the response whose body carries newline-delimited JSON. Throws <see cref="ClusterStoreUnavailableException"/>
    /// when none does. The caller owns (and disposes) the response.
    /// </summary>
    public async Task<(HttpResponseMessage Response, Uri Endpoint)> OpenStreamAsync(string path, byte[] body, CancellationToken cancellationToken)
    {
        var failures = new List<string>();
        int start = Volatile.Read(ref _preferred);
        for (int i = 0; i < _endpoints.Length; i++)
        {
            int index = (start + i) % _endpoints.Length;
            var endpoint = _endpoints[index];
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(_options.RequestTimeout);
            HttpResponseMessage? response = null;
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(endpoint, path)) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = new("application/json");
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token);
                if (response.IsSuccessStatusCode)
                {
                    Volatile.Write(ref _preferred, index);
                    return (response, endpoint);
                }
                failures.Add($"{endpoint}: HTTP {(int)response.StatusCode}");
                response.Dispose();
            }
            catch (Exception e) when (e is HttpRequestException or IOException
                                      || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                response?.Dispose();
                failures.Add($"{endpoint}: {(e is OperationCanceledException ? $"no answer within {_options.RequestTimeout.TotalSeconds:0.#} s" : Describe(e))}");
            }
        }
        throw Unavailable(failures);
    }

    /// <summary>Moves the preferred endpoint off <paramref name="endpoint"/> after a stream on it broke.</summary>
    public void Demote(Uri endpoint)
    {
        int index = Array.IndexOf(_endpoints, endpoint);
        if (index >= 0 && _endpoints.Length > 1)
        {
            Interlocked.CompareExchange(ref _preferred, (index + 1) % _endpoints.Length, index);
        }
    }

    public ClusterStoreUnavailableException Unavailable(IReadOnlyList<string> failures) =>
        new($"no etcd endpoint answered ({string.Join("; ", failures)}); check that etcd is running and reachable at {string.Join(", ", _endpoints.Select(e => e.ToString()))}",
            Names());

    private string[] Names() => [.. _endpoints.Select(e => e.ToString())];

    private static string Describe(Exception e)
    {
        // The innermost message says "Connection refused" rather than the generic wrapper's text.
        var inner = e;
        while (inner.InnerException is not null)
        {
            inner = inner.InnerException;
        }
        return inner == e ? e.Message : $"{e.Message} ({inner.Message})";
    }

    private static EtcdErrorBody ParseError(byte[] payload, HttpStatusCode status)
    {
        try
        {
            var body = JsonSerializer.Deserialize(payload, EtcdJsonContext.Default.EtcdErrorBody);
            if (body is not null && (body.Message is not null || body.Error is not null))
            {
                return body;
            }
        }
        catch (JsonException)
        {
        }
        return new EtcdErrorBody
        {
            Code = status == HttpStatusCode.ServiceUnavailable ? GrpcUnavailable : 2,
            Message = $"HTTP {(int)status}: {System.Text.Encoding.UTF8.GetString(payload.AsSpan(0, Math.Min(payload.Length, 200)))}",
        };
    }

    public void Dispose() => _http.Dispose();
}

using System.Net.Http.Headers;
using Cairn.ControlPlane;
using Microsoft.AspNetCore.Http;

namespace Cairn.Api;

/// <summary>
/// Passes a volume request on to the node that owns (or is placed to own) the volume, and relays its answer as is, so
/// any node's API serves the whole cluster. A forwarded request carries <see cref="ForwardedHeader"/>: the receiving
/// node answers it itself and never forwards it again, so two nodes with different views cannot bounce it forever.
/// </summary>
public sealed class NodeForwarder(HttpClient http)
{
    public const string ForwardedHeader = "Cairn-Forwarded-By";

    /// <summary>How long a forwarded call may take: creates and deletes touch storage on the far node.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public static bool IsForwarded(HttpRequest request) => request.Headers.ContainsKey(ForwardedHeader);

    /// <summary>Sends <paramref name="method"/> <paramref name="pathAndQuery"/> to <paramref name="node"/>'s API and returns its answer as a result to relay.</summary>
    public async Task<RelayedResult> ForwardAsync(NodeRecord node, string fromNode, HttpMethod method, string pathAndQuery, byte[]? jsonBody, CancellationToken cancellationToken)
    {
        using var response = await SendAsync(node, fromNode, method, pathAndQuery, jsonBody, cancellationToken);
        byte[] body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        return new RelayedResult((int)response.StatusCode, response.Content.Headers.ContentType?.ToString(), response.Headers.Location?.ToString(), body);
    }

    /// <summary>Sends the request and returns the raw response (the caller disposes it); unreachable nodes become a 503 naming them.</summary>
    public async Task<HttpResponseMessage> SendAsync(NodeRecord node, string fromNode, HttpMethod method, string pathAndQuery, byte[]? jsonBody, CancellationToken cancellationToken)
    {
        if (node.ApiAddress is not { } api)
        {
            throw new CairnException(CairnErrorCode.Unavailable, $"node '{node.Name}' advertises no API address, so the request cannot be passed to it");
        }
        using var message = new HttpRequestMessage(method, new Uri(new Uri(api), pathAndQuery));
        message.Headers.Add(ForwardedHeader, fromNode);
        if (jsonBody is not null)
        {
            message.Content = new ByteArrayContent(jsonBody);
            message.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        }
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(Timeout);
        try
        {
            return await http.SendAsync(message, deadline.Token);
        }
        catch (Exception e) when (e is HttpRequestException || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            throw new CairnException(CairnErrorCode.Unavailable, $"node '{node.Name}' did not answer at {api} ({e.Message}); retry, or check that it is Up", inner: e);
        }
    }

    /// <summary>Another node's answer, relayed byte for byte.</summary>
    public sealed class RelayedResult(int status, string? contentType, string? location, byte[] body) : IResult
    {
        public int StatusCode => status;

        public async Task ExecuteAsync(HttpContext httpContext)
        {
            var response = httpContext.Response;
            response.StatusCode = status;
            if (contentType is not null)
            {
                response.ContentType = contentType;
            }
            if (location is not null)
            {
                response.Headers.Location = location;
            }
            if (body.Length > 0 && status is not (StatusCodes.Status204NoContent or StatusCodes.Status304NotModified))
            {
                // Kestrel refuses any write, even an empty one, to a 204: a relayed DELETE answered 500 although it was done.
                await response.Body.WriteAsync(body, httpContext.RequestAborted);
            }
        }
    }
}

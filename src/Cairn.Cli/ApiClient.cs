using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Cairn.Cli;

/// <summary>Calls the cairnd REST API; every failure becomes a <see cref="CliException"/> with a one-line reason.</summary>
internal sealed partial class ApiClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly string _baseUrl;

    public ApiClient(string baseUrl, TimeSpan timeout)
    {
        if (!Uri.TryCreate(baseUrl, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new CliException(CliException.Failed, $"--api '{baseUrl}' is not an http:// or https:// URL");
        }
        _baseUrl = baseUrl.TrimEnd('/');
        _http = new HttpClient { BaseAddress = new Uri(_baseUrl + "/"), Timeout = timeout };
    }

    /// <summary>A response body as parsed DTO plus its raw JSON (printed as-is with --json).</summary>
    public sealed record Reply<T>(T Value, string Json);

    public Task<Reply<VolumeListDto>> ListVolumesAsync(CancellationToken ct) =>
        SendAsync(HttpMethod.Get, "api/v1/volumes", null, CliJson.Default.VolumeListDto, ct);

    public Task<Reply<VolumeDto>> GetVolumeAsync(string name, CancellationToken ct) =>
        SendAsync(HttpMethod.Get, VolumePath(name), null, CliJson.Default.VolumeDto, ct);

    public Task<Reply<VolumeDto>> CreateVolumeAsync(CreateVolumeDto request, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, "api/v1/volumes", JsonContent.Create(request, CliJson.Default.CreateVolumeDto), CliJson.Default.VolumeDto, ct);

    /// <summary>Where the volume would go and why, without creating it.</summary>
    public Task<Reply<PlacementDto>> PlanVolumeAsync(CreateVolumeDto request, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, "api/v1/volumes?dryRun=true", JsonContent.Create(request, CliJson.Default.CreateVolumeDto), CliJson.Default.PlacementDto, ct);

    public Task<Reply<VolumeDto>> SetReplicaCountAsync(string name, int replicas, CancellationToken ct) =>
        SendAsync(HttpMethod.Patch, VolumePath(name), JsonContent.Create(new ReplicaCountDto(replicas), CliJson.Default.ReplicaCountDto), CliJson.Default.VolumeDto, ct);

    public Task<Reply<VolumeDto>> GrowVolumeAsync(string name, string size, CancellationToken ct) =>
        SendAsync(HttpMethod.Patch, VolumePath(name), JsonContent.Create(new GrowVolumeDto(size), CliJson.Default.GrowVolumeDto), CliJson.Default.VolumeDto, ct);

    public Task<Reply<VolumeDto>> SetIscsiAccessAsync(string name, SetIscsiAccessDto access, CancellationToken ct) =>
        SendAsync(HttpMethod.Put, VolumePath(name) + "/iscsi-access", JsonContent.Create(access, CliJson.Default.SetIscsiAccessDto), CliJson.Default.VolumeDto, ct);

    public async Task DeleteVolumeAsync(string name, bool force, CancellationToken ct)
    {
        using var response = await SendRawAsync(HttpMethod.Delete, VolumePath(name) + (force ? "?force=true" : ""), null, ct);
    }

    public Task<Reply<PoolListDto>> ListPoolsAsync(CancellationToken ct) =>
        SendAsync(HttpMethod.Get, "api/v1/pools", null, CliJson.Default.PoolListDto, ct);

    public Task<Reply<NodeListDto>> ListNodesAsync(CancellationToken ct) =>
        SendAsync(HttpMethod.Get, "api/v1/nodes", null, CliJson.Default.NodeListDto, ct);

    public Task<Reply<NodeDto>> GetNodeAsync(string name, CancellationToken ct) =>
        SendAsync(HttpMethod.Get, NodePath(name), null, CliJson.Default.NodeDto, ct);

    public Task<Reply<NodeDto>> SetDrainingAsync(string name, bool draining, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, NodePath(name) + (draining ? "/drain" : "/undrain"), null, CliJson.Default.NodeDto, ct);

    public Task<Reply<ClusterDto>> GetClusterAsync(CancellationToken ct) =>
        SendAsync(HttpMethod.Get, "api/v1/cluster", null, CliJson.Default.ClusterDto, ct);

    private static string NodePath(string name) => "api/v1/nodes/" + Uri.EscapeDataString(name);

    private static string VolumePath(string name) => "api/v1/volumes/" + Uri.EscapeDataString(name);

    private async Task<Reply<T>> SendAsync<T>(HttpMethod method, string path, HttpContent? body, JsonTypeInfo<T> typeInfo, CancellationToken ct)
    {
        using var response = await SendRawAsync(method, path, body, ct);
        string json = await response.Content.ReadAsStringAsync(ct);
        try
        {
            var value = JsonSerializer.Deserialize(json, typeInfo) ?? throw new JsonException("empty body");
            return new Reply<T>(value, json);
        }
        catch (JsonException e)
        {
            throw new CliException(CliException.Failed, $"the API at {_baseUrl} sent a response this cairn does not understand ({e.Message}); are cairn and cairnd the same version?");
        }
    }

    private async Task<HttpResponseMessage> SendRawAsync(HttpMethod method, string path, HttpContent? body, CancellationToken ct)
    {
        HttpResponseMessage response;
        try
        {
            using var request = new HttpRequestMessage(method, path) { Content = body };
            response = await _http.SendAsync(request, ct);
        }
        catch (HttpRequestException e)
        {
            throw Unreachable(e.Message);
        }
        catch (TaskCanceledException) when (!ct.IsCancellationRequested)
        {
            throw Unreachable($"no answer within {_http.Timeout.TotalSeconds:0} s");
        }
        if (!response.IsSuccessStatusCode)
        {
            using (response)
            {
                throw new CliException(CliException.Failed, await ReasonAsync(response, ct));
            }
        }
        return response;
    }

    private CliException Unreachable(string why) =>
        new(CliException.Unreachable, $"cannot reach the Cairn API at {_baseUrl}: {why} (is cairnd running?)");

    /// <summary>The problem's detail (which names the field and reason), else its title, else the status.</summary>
    private static async Task<string> ReasonAsync(HttpResponseMessage response, CancellationToken ct)
    {
        string text = await response.Content.ReadAsStringAsync(ct);
        string? reason = null;
        try
        {
            var problem = JsonSerializer.Deserialize(text, CliJson.Default.ProblemDto);
            reason = problem?.Detail ?? problem?.Title;
        }
        catch (JsonException)
        {
            reason = string.IsNullOrWhiteSpace(text) ? null : text;
        }
        reason ??= $"the API answered {(int)response.StatusCode} {response.ReasonPhrase}";
        return OneLine(reason);
    }

    internal static string OneLine(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text.Trim())
        {
            sb.Append(c is '\r' or '\n' ? ' ' : c);
        }
        return sb.ToString();
    }

    public void Dispose() => _http.Dispose();
}

using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Http;

namespace Cairn.Api;

internal static class ApiBodies
{
    /// <summary>
    /// Reads the JSON body ourselves rather than through parameter binding, so a malformed body gets a
    /// problem naming what is wrong (and where) instead of an empty 400.
    /// </summary>
    public static async Task<T> ReadAsync<T>(HttpRequest request, JsonTypeInfo<T> typeInfo, string example, CancellationToken cancellationToken)
        where T : class
    {
        try
        {
            var body = await JsonSerializer.DeserializeAsync(request.Body, typeInfo, cancellationToken);
            return body ?? throw ApiErrors.Invalid("body", $"the request body is JSON null; send an object like {example}");
        }
        catch (JsonException e)
        {
            string field = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : "body";
            string reason = e.Message.Contains("The input does not contain any JSON tokens", StringComparison.Ordinal)
                ? $"the request body is empty; send JSON like {example}"
                : $"the request body is not valid JSON: {e.Message}";
            throw ApiErrors.Invalid(field, reason);
        }
    }
}

using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.ControlPlane;
using Cairn.Core;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Cairn.Api;

/// <summary>Turns control-plane errors into application/problem+json: status from the code, the field and reason in <c>errors</c>.</summary>
internal static class ApiErrors
{
    public static int StatusOf(CairnErrorCode code) => code switch
    {
        CairnErrorCode.NotFound => StatusCodes.Status404NotFound,
        CairnErrorCode.AlreadyExists => StatusCodes.Status409Conflict,
        CairnErrorCode.InvalidArgument => StatusCodes.Status400BadRequest,
        CairnErrorCode.Busy => StatusCodes.Status409Conflict,
        CairnErrorCode.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status500InternalServerError,
    };

    private static string TitleOf(CairnErrorCode code) => code switch
    {
        CairnErrorCode.NotFound => "Not found",
        CairnErrorCode.AlreadyExists => "Already exists",
        CairnErrorCode.InvalidArgument => "Invalid request",
        CairnErrorCode.Busy => "Volume busy",
        CairnErrorCode.Unavailable => "Unavailable",
        _ => "Error",
    };

    public static ProblemHttpResult Problem(CairnException e)
    {
        var problem = new HttpValidationProblemDetails
        {
            Status = StatusOf(e.Code),
            Title = TitleOf(e.Code),
            Detail = e.Message,
        };
        if (e.Field is not null)
        {
            problem.Errors[e.Field] = [e.Message];
        }
        problem.Extensions["code"] = e.Code.ToString();
        return TypedResults.Problem(problem);
    }

    /// <summary>Catches control-plane errors from every endpoint in the group.</summary>
    public static async ValueTask<object?> Filter(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        try
        {
            return await next(context);
        }
        catch (CairnException e)
        {
            return Problem(e);
        }
        catch (ClusterStoreUnavailableException e)
        {
            // The store client gave up after its deadlines: answer at once rather than hang the caller.
            return Problem(new CairnException(CairnErrorCode.Unavailable,
                $"control plane unavailable: the cluster store did not answer ({OneLine(e.Message)}); retry once it is reachable", inner: e));
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    public static CairnException Invalid(string field, string message) => new(CairnErrorCode.InvalidArgument, message, field);

    /// <summary>Reads a size given as "10GiB" or as a number of bytes.</summary>
    public static long ParseSize(JsonElement? size)
    {
        const string Hint = "give a number of bytes or a string such as \"10GiB\" or \"512MiB\"";
        if (size is not { } element || element.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
        {
            throw Invalid("size", $"size is required; {Hint}");
        }
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return ByteSize.TryParse(element.GetString(), out long bytes, out string error) ? bytes : throw Invalid("size", error);
            case JsonValueKind.Number:
                return element.TryGetInt64(out long number) && number > 0
                    ? number
                    : throw Invalid("size", $"size {element.GetRawText()} is not a positive whole number of bytes");
            default:
                throw Invalid("size", $"size must be a number or a string, not {element.ValueKind.ToString().ToLowerInvariant()}; {Hint}");
        }
    }

    /// <summary>Parses a flag in the query (?force=, ?dryRun=); anything but true/false/1/0 is an error rather than a silent false.</summary>
    public static bool ParseBool(string field, string? value) => value?.ToLowerInvariant() switch
    {
        null or "" or "false" or "0" => false,
        "true" or "1" => true,
        _ => throw Invalid(field, $"{field} must be true or false, not '{value}'"),
    };
}

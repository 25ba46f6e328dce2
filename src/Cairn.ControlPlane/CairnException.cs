namespace Cairn.ControlPlane;

/// <summary>What kind of failure a control-plane call met; the REST API maps each to an HTTP status.</summary>
public enum CairnErrorCode
{
    /// <summary>No such volume or pool (404).</summary>
    NotFound,
    /// <summary>The name is taken (409).</summary>
    AlreadyExists,
    /// <summary>The request itself is wrong: bad name, bad size, shrink (400).</summary>
    InvalidArgument,
    /// <summary>The resource is in use or changed underneath the call: connected clients, concurrent update (409).</summary>
    Busy,
    /// <summary>Something the call needs is not there: no pool, pool offline, storage failure (503).</summary>
    Unavailable,
}

/// <summary>A failure the user caused or can act on. The message names what was wrong and what to do.</summary>
public sealed class CairnException : Exception
{
    public CairnException(CairnErrorCode code, string message, string? field = null, Exception? inner = null)
        : base(message, inner)
    {
        Code = code;
        Field = field;
    }

    public CairnErrorCode Code { get; }

    /// <summary>The request field the error is about (for example "name" or "size"), when there is one.</summary>
    public string? Field { get; }
}

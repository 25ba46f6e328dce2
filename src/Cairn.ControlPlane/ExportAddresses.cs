namespace Cairn.ControlPlane;

/// <summary>
/// Where this node's frontends can be reached, as clients should dial them. The daemon fills it in
/// once a frontend is listening (its port may be ephemeral), so addresses are never advertised early.
/// </summary>
public sealed class ExportAddresses
{
    private volatile string? _nbdBase;

    /// <summary>Sets the NBD base address from the host clients should dial and the port the server bound.</summary>
    public void SetNbd(string advertiseHost, int port)
    {
        ArgumentException.ThrowIfNullOrEmpty(advertiseHost);
        string host = advertiseHost.Contains(':', StringComparison.Ordinal) && !advertiseHost.StartsWith('[')
            ? $"[{advertiseHost}]" // IPv6 literal
            : advertiseHost;
        _nbdBase = $"nbd://{host}:{port}";
    }

    public string? NbdBase => _nbdBase;

    public string? NbdAddressFor(string volumeName) => _nbdBase is { } b ? $"{b}/{volumeName}" : null;
}

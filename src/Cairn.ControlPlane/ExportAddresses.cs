namespace Cairn.ControlPlane;

/// <summary>
/// Where this node's frontends can be reached, as clients should dial them. The daemon fills it in
/// once a frontend is listening (its port may be ephemeral), so addresses are never advertised early.
/// </summary>
public sealed class ExportAddresses
{
    private volatile string? _nbdBase;
    private volatile string? _iscsiPortal;
    private volatile string? _iscsiTargetPrefix;

    /// <summary>Sets the NBD base address from the host clients should dial and the port the server bound.</summary>
    public void SetNbd(string advertiseHost, int port)
    {
        _nbdBase = $"nbd://{HostPort(advertiseHost, port)}";
    }

    /// <summary>Sets the iSCSI portal (host:port) and the prefix that, with a volume name, makes its target IQN.</summary>
    public void SetIscsi(string advertiseHost, int port, string targetPrefix)
    {
        ArgumentException.ThrowIfNullOrEmpty(targetPrefix);
        _iscsiTargetPrefix = targetPrefix;
        _iscsiPortal = HostPort(advertiseHost, port);
    }

    private static string HostPort(string advertiseHost, int port)
    {
        ArgumentException.ThrowIfNullOrEmpty(advertiseHost);
        string host = advertiseHost.Contains(':', StringComparison.Ordinal) && !advertiseHost.StartsWith('[')
            ? $"[{advertiseHost}]" // IPv6 literal
            : advertiseHost;
        return $"{host}:{port}";
    }

    /// <summary>The iSCSI portal and target of a volume (LUN 0), or null while no iSCSI target listens.</summary>
    public IscsiAddress? IscsiAddressFor(string volumeName) =>
        _iscsiPortal is { } portal && _iscsiTargetPrefix is { } prefix ? new IscsiAddress(portal, prefix + volumeName, 0) : null;

    public string? NbdBase => _nbdBase;

    public string? NbdAddressFor(string volumeName) => _nbdBase is { } b ? $"{b}/{volumeName}" : null;
}

/// <summary>How an iSCSI initiator reaches a volume: the portal to discover, the target to log in to, and the LUN.</summary>
public sealed record IscsiAddress(string Portal, string Target, int Lun);

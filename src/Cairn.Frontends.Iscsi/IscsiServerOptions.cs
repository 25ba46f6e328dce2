using System.Net;

namespace Cairn.Frontends.Iscsi;

/// <summary>Where and how the iSCSI target listens. Every limit is fixed up front so one initiator cannot exhaust the daemon.</summary>
public sealed class IscsiServerOptions
{
    /// <summary>The listening endpoint (3260 is the IANA iSCSI port); port 0 picks a free port (see <see cref="IscsiServer.LocalEndpoint"/>).</summary>
    public IPEndPoint Endpoint { get; set; } = new(IPAddress.Loopback, 3260);

    /// <summary>Each export is served as the target <c>TargetPrefix + exportName</c>, with the volume as LUN 0.</summary>
    public string TargetPrefix { get; set; } = "iqn.2026-11.io.cairn:";

    /// <summary>
    /// The host initiators should dial, answered in SendTargets instead of the address a discovery connection
    /// arrived on (which behind NAT or port forwarding is not one the initiator can reach). Null = that address.
    /// </summary>
    public string? AdvertisedHost { get; set; }

    /// <summary>Connections beyond this are accepted and closed at once.</summary>
    public int MaxConnections { get; set; } = 1024;
}

using System.Net;

namespace Cairn.Frontends.Nbd;

/// <summary>Where and how the NBD server listens. Every limit is fixed up front so one client cannot exhaust the daemon.</summary>
public sealed class NbdServerOptions
{
    /// <summary>The listening endpoint; port 0 picks a free port (see <see cref="NbdServer.LocalEndpoint"/>).</summary>
    public IPEndPoint Endpoint { get; set; } = new(IPAddress.Loopback, 10809);

    /// <summary>Connections beyond this are accepted and closed at once.</summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>Requests a connection may have waiting on the device at once; the receive loop stops reading past this.</summary>
    public int MaxInFlightPerConnection { get; set; } = 128;

    /// <summary>Largest READ or WRITE payload; advertised as the maximum block size. Larger reads get EINVAL, larger writes close the connection.</summary>
    public int MaxRequestBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>Which socket layer serves connections; internal so tests can cover both.</summary>
    internal NbdTransportKind Transport { get; set; } = NbdTransportKind.Epoll;
}

/// <summary>Epoll: our own IO threads on Linux x86-64 (falls back to Sockets elsewhere). Sockets: .NET's async sockets.</summary>
internal enum NbdTransportKind
{
    Epoll,
    Sockets,
}

using System.Net;
using System.Net.Sockets;
using Cairn.Core.Transport;

namespace Cairn.Core.Tests;

/// <summary>A connected loopback pair for the transport tests: a plain socket, and an epoll transport on the given IO threads.</summary>
internal static class LoopbackPair
{
    public static (Socket Peer, EpollTransport Transport) Connect(EpollLoopGroup loops)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        peer.Connect(listener.LocalEndPoint!);
        return (peer, loops.Open(listener.Accept()));
    }
}

using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Cairn.Core.Transport;

namespace Cairn.Replication;

/// <summary>
/// How replica connections move bytes, on both ends: on Linux x86-64 on the process's epoll IO threads
/// (<see cref="IoThreads"/>: one per core, shared by every link, every served connection and every client connection of the
/// frontends), so a request or a reply is
/// handled right where the socket became readable, without .NET's hop to the thread pool (the NBD frontend measured
/// that hop at 3x the CPU per IO, and it is paid on the owner and on every replica); elsewhere .NET's sockets.
/// Continuations of replies therefore run on an IO thread: nothing on the replicated write path may block there.
/// </summary>
internal static class ReplicaTransport
{
    private static EpollLoopGroup? Loops => IoThreads.Group;

    /// <summary>Wraps a connected socket that .NET has not used for async IO (it would watch it in its own epoll set too).</summary>
    public static ISocketTransport Open(Socket socket) => Loops is not null ? Loops.Open(socket) : new SocketTransport(socket);

    /// <summary>
    /// Connects without .NET's async sockets, for the reason above: a non-blocking connect, polled until it finishes
    /// (a LAN or loopback connect finishes at once or within a millisecond or two). Cancelling disposes the socket.
    /// </summary>
    public static async Task<Socket> ConnectAsync(EndPoint endpoint, CancellationToken cancellationToken)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, Blocking = false };
        try
        {
            try
            {
                socket.Connect(endpoint);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
                while (!socket.Poll(0, SelectMode.SelectWrite) && !socket.Poll(0, SelectMode.SelectError))
                {
                    await Task.Delay(1, cancellationToken);
                }
                int error = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
                if (error != 0)
                {
                    throw new IOException($"connecting to {endpoint} failed: {Marshal.GetPInvokeErrorMessage(error)}");
                }
            }
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}

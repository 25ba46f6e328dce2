using System.Net.Sockets;

namespace Cairn.Frontends.Nbd;

/// <summary>How a connection moves bytes. One receive at a time (the receive loop); sends are serialized by the caller.</summary>
internal interface INbdTransport
{
    /// <summary>Receives at least one byte, or 0 when the peer closed.</summary>
    ValueTask<int> ReceiveAsync(Memory<byte> buffer);

    /// <summary>Sends some of <paramref name="data"/>; returns how many bytes went out.</summary>
    ValueTask<int> SendAsync(ReadOnlyMemory<byte> data);

    /// <summary>Shuts the connection down from any thread; pending and later operations fail or see end of stream.</summary>
    void Close();
}

/// <summary>The portable transport: .NET's own async sockets (continuations hop to the thread pool unless the host enables inline completions).</summary>
internal sealed class SocketTransport(Socket socket) : INbdTransport
{
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer) => socket.ReceiveAsync(buffer, SocketFlags.None);

    public ValueTask<int> SendAsync(ReadOnlyMemory<byte> data) => socket.SendAsync(data, SocketFlags.None);

    public void Close()
    {
        try
        {
            socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception)
        {
            // Already closed or never fully connected.
        }
        socket.Dispose();
    }
}

using System.Net.Sockets;

namespace Cairn.Core.Transport;

/// <summary>How a connection moves bytes. One receive at a time (the receive loop); sends are serialized by the caller.</summary>
public interface ISocketTransport
{
    /// <summary>Receives at least one byte, or 0 when the peer closed.</summary>
    ValueTask<int> ReceiveAsync(Memory<byte> buffer);

    /// <summary>Sends some of <paramref name="data"/>; returns how many bytes went out.</summary>
    ValueTask<int> SendAsync(ReadOnlyMemory<byte> data);

    /// <summary>Shuts the connection down from any thread; pending and later operations fail or see end of stream.</summary>
    void Close();
}

/// <summary>The portable transport: .NET's own async sockets (continuations hop to the thread pool unless the host enables inline completions).</summary>
public sealed class SocketTransport(Socket socket) : ISocketTransport
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

/// <summary>Whole-buffer operations over a transport, which itself moves "some" bytes per call.</summary>
public static class SocketTransportExtensions
{
    /// <summary>Sends all of <paramref name="data"/>. No allocation while the socket takes the bytes at once.</summary>
    public static ValueTask SendAllAsync(this ISocketTransport transport, ReadOnlyMemory<byte> data)
    {
        while (!data.IsEmpty)
        {
            var sending = transport.SendAsync(data);
            if (!sending.IsCompletedSuccessfully)
            {
                return SendRestAsync(transport, sending, data);
            }
            data = data[sending.Result..];
        }
        return ValueTask.CompletedTask;
    }

    private static async ValueTask SendRestAsync(ISocketTransport transport, ValueTask<int> sending, ReadOnlyMemory<byte> data)
    {
        data = data[await sending..];
        while (!data.IsEmpty)
        {
            data = data[await transport.SendAsync(data)..];
        }
    }

    /// <summary>Fills <paramref name="buffer"/>; false when the peer closed first.</summary>
    public static async ValueTask<bool> ReceiveExactlyAsync(this ISocketTransport transport, Memory<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int n = await transport.ReceiveAsync(buffer);
            if (n == 0)
            {
                return false;
            }
            buffer = buffer[n..];
        }
        return true;
    }
}

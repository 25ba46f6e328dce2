using System.Net.Sockets;
using Cairn.Core.Transport;

namespace Cairn.Core.Tests;

/// <summary>
/// A receive that empties the socket lets the next one park without a syscall; these pin that no later arrival is
/// missed by it, from the IO thread and from other threads, and that the end of the stream is still seen.
/// </summary>
public sealed class EpollTransportReceiveTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Bytes_that_arrive_after_a_receive_emptied_the_socket_are_received_whenever_they_arrive()
    {
        if (!EpollLoop.IsSupported)
        {
            return;
        }
        using var loops = new EpollLoopGroup("drained", _ => { }, count: 1);
        var (peer, transport) = LoopbackPair.Connect(loops);
        using (peer)
        {
            var buffer = new byte[4096];
            for (int round = 0; round < 200; round++)
            {
                int size = 1 + round % 37;
                peer.Send(new byte[size].AsSpan(0, size));
                int got = 0;
                while (got < size)
                {
                    got += await transport.ReceiveAsync(buffer.AsMemory(got)).AsTask().WaitAsync(Deadline); // short: the socket is empty now
                }
                Assert.Equal(size, got);
                // The next bytes arrive before, during or after the next receive starts: each order must deliver them.
                var next = round % 3 == 0 ? transport.ReceiveAsync(buffer).AsTask() : null;
                if (round % 3 == 1)
                {
                    await Task.Yield();
                }
                peer.Send([(byte)round]);
                if (round % 3 == 2)
                {
                    Thread.SpinWait(round * 50);
                }
                next ??= transport.ReceiveAsync(buffer).AsTask();
                Assert.Equal(1, await next.WaitAsync(Deadline));
                Assert.Equal((byte)round, buffer[0]);
            }
            peer.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, await transport.ReceiveAsync(buffer).AsTask().WaitAsync(Deadline));
            Assert.Equal(0, await transport.ReceiveAsync(buffer).AsTask().WaitAsync(Deadline)); // the end is seen again, not waited for
        }
        transport.Close();
    }

    [Fact]
    public async Task A_receive_that_fills_its_buffer_leaves_the_rest_to_the_next_one_without_an_edge()
    {
        if (!EpollLoop.IsSupported)
        {
            return;
        }
        using var loops = new EpollLoopGroup("filled", _ => { }, count: 1);
        var (peer, transport) = LoopbackPair.Connect(loops);
        using (peer)
        {
            var sent = new byte[1000];
            Random.Shared.NextBytes(sent);
            peer.Send(sent);
            var received = new byte[1000];
            int got = 0;
            while (got < received.Length)
            {
                // Ten-byte buffers: each receive fills its buffer, so the next must still ask the socket.
                got += await transport.ReceiveAsync(received.AsMemory(got, Math.Min(10, received.Length - got))).AsTask().WaitAsync(Deadline);
            }
            Assert.Equal(sent, received);
        }
        transport.Close();
    }
}

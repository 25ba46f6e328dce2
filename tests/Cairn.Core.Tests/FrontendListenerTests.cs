using System.Net;
using System.Net.Sockets;

namespace Cairn.Core.Tests;

public sealed class FrontendListenerTests
{
    private sealed class IdleConnection(Socket socket) : IFrontendConnection
    {
        private readonly TaskCompletionSource _aborted = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string ClientDescription => "test";

        public async Task RunAsync()
        {
            await _aborted.Task;
            socket.Dispose();
        }

        public void Abort(string reason) => _aborted.TrySetResult();
    }

    /// <summary>
    /// Replies are small and pipelined (the replica protocol, NBD, iSCSI): under Nagle's algorithm a reply written while
    /// an earlier one is unacknowledged would wait for the peer's delayed ACK, stalling every pipelined sender.
    /// </summary>
    [Fact]
    public async Task Accepted_connections_send_without_Nagle_delay()
    {
        var accepted = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var log = new FrontendLog(_ => { }, _ => { }, (_, _) => { });
        await using var listener = new FrontendListener("test", 4, socket =>
        {
            accepted.TrySetResult(socket.NoDelay);
            return new IdleConnection(socket);
        }, log);
        listener.Start(new IPEndPoint(IPAddress.Loopback, 0));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndpoint);

        Assert.True(await accepted.Task.WaitAsync(TimeSpan.FromSeconds(30)));
    }
}

using System.Buffers.Binary;
using System.Net.Sockets;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>Hostile and broken NBD clients against a real cairnd: each loses only its own connection.</summary>
public sealed class BadInputTests
{
    private static readonly byte[][] Garbage =
    [
        [],                                                            // connect and hang up at once
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(),               // the wrong protocol entirely
        [0, 0, 0, 0x80],                                               // unknown client flags
        [0, 0, 0, 3, 0x49, 0x48, 0x41],                                // truncated option header
        [0, 0, 0, 3, .. "IHAVEOPT"u8, 0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFF], // OPT_GO claiming a 4 GiB payload
        [0, 0, 0, 3, .. "BADMAGIC"u8, 0, 0, 0, 7, 0, 0, 0, 0],         // wrong option magic
    ];

    [Fact]
    public async Task Malformed_handshakes_close_only_their_own_connection()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "victim", "--size", "16MiB")).EnsureSuccess();
        using var good = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "victim");
        var pattern = new byte[65536];
        new Random(1).NextBytes(pattern);
        good.Write(0, pattern);
        good.Flush();

        foreach (var bytes in Garbage)
        {
            await SendAndExpectCloseAsync(cairn.NbdPort, bytes, afterHandshakeGreeting: true);
        }

        var readBack = new byte[pattern.Length];
        good.Read(0, readBack);
        Assert.Equal(pattern, readBack);
        Assert.True(cairn.IsRunning, "cairnd died\n" + cairn.Log);
    }

    [Fact]
    public async Task Bad_requests_in_transmission_get_errors_or_a_closed_connection_and_data_survives()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "victim", "--size", "16MiB")).EnsureSuccess();
        using var good = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "victim");
        var pattern = new byte[8192];
        new Random(2).NextBytes(pattern);
        good.Write(4096, pattern);
        good.Flush();

        // Read past the end: EINVAL, connection stays usable.
        using (var c = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "victim"))
        {
            var e = Assert.Throws<IOException>(() => c.Read(16 * (1 << 20) - 4096, new byte[8192]));
            Assert.Contains("22", e.Message, StringComparison.Ordinal); // EINVAL
            c.Read(0, new byte[4096]);
        }

        // A request with the wrong magic, a write whose payload never arrives, a read of 64 MiB, an unknown command:
        // the server answers with an error or drops the connection, never anything worse.
        foreach (var request in new[]
        {
            Request(magic: 0xDEADBEEF, type: 0, offset: 0, length: 4096),
            Request(type: 1, offset: 0, length: 1 << 20, truncatePayload: true),
            Request(type: 0, offset: 0, length: 64u << 20),
            Request(type: 77, offset: 0, length: 0),
            Request(type: 1, offset: 0, length: 64u << 20, truncatePayload: true),
        })
        {
            await SendAfterGoAsync(cairn.NbdPort, "victim", request);
        }

        var readBack = new byte[pattern.Length];
        good.Read(4096, readBack);
        Assert.Equal(pattern, readBack);
        Assert.True(cairn.IsRunning, "cairnd died\n" + cairn.Log);
    }

    private static byte[] Request(ushort type, long offset, uint length, uint magic = 0x25609513, bool truncatePayload = false)
    {
        var req = new byte[28 + (truncatePayload ? 100 : 0)];
        BinaryPrimitives.WriteUInt32BigEndian(req, magic);
        BinaryPrimitives.WriteUInt16BigEndian(req.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(req.AsSpan(8), 99);
        BinaryPrimitives.WriteUInt64BigEndian(req.AsSpan(16), (ulong)offset);
        BinaryPrimitives.WriteUInt32BigEndian(req.AsSpan(24), length);
        return req;
    }

    private static async Task SendAndExpectCloseAsync(int port, byte[] bytes, bool afterHandshakeGreeting)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        var stream = tcp.GetStream();
        if (afterHandshakeGreeting)
        {
            var greeting = new byte[18];
            await stream.ReadExactlyAsync(greeting);
        }
        await stream.WriteAsync(bytes);
        if (bytes.Length == 0)
        {
            return;
        }
        tcp.Client.Shutdown(SocketShutdown.Send);
        await DrainUntilClosedAsync(stream);
    }

    private static async Task SendAfterGoAsync(int port, string export, byte[] request)
    {
        using var client = await MiniNbdClient.ConnectAsync(port, export);
        using var raw = new TcpClient();
        // MiniNbdClient owns its socket; a raw second connection is simpler for sending arbitrary bytes.
        await raw.ConnectAsync("127.0.0.1", port);
        var stream = raw.GetStream();
        await NegotiateGoAsync(stream, export);
        await stream.WriteAsync(request);
        raw.Client.Shutdown(SocketShutdown.Send);
        await DrainUntilClosedAsync(stream);
        client.Read(0, new byte[512]); // a neighbour connection still works
    }

    private static async Task NegotiateGoAsync(NetworkStream stream, string export)
    {
        var greeting = new byte[18];
        await stream.ReadExactlyAsync(greeting);
        var name = System.Text.Encoding.UTF8.GetBytes(export);
        var msg = new byte[4 + 16 + 4 + name.Length + 2];
        BinaryPrimitives.WriteUInt32BigEndian(msg, 3);
        "IHAVEOPT"u8.CopyTo(msg.AsSpan(4));
        BinaryPrimitives.WriteUInt32BigEndian(msg.AsSpan(12), 7);
        BinaryPrimitives.WriteUInt32BigEndian(msg.AsSpan(16), (uint)(4 + name.Length + 2));
        BinaryPrimitives.WriteUInt32BigEndian(msg.AsSpan(20), (uint)name.Length);
        name.CopyTo(msg, 24);
        await stream.WriteAsync(msg);
        var head = new byte[20];
        while (true)
        {
            await stream.ReadExactlyAsync(head);
            var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(16))];
            await stream.ReadExactlyAsync(payload);
            if (BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(12)) == 1)
            {
                return;
            }
        }
    }

    /// <summary>Reads whatever the server says until it closes; fails if it neither answers nor closes within 30 s.</summary>
    private static async Task DrainUntilClosedAsync(NetworkStream stream)
    {
        var buffer = new byte[65536];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            while (await stream.ReadAsync(buffer, cts.Token) > 0)
            {
            }
        }
        catch (IOException)
        {
            // Reset by the server: also a closed connection.
        }
    }
}

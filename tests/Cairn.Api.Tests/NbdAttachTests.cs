using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Cairn.Api.Tests;

/// <summary>A real NBD client attached through cairnd's NBD listener: the API must see it, refuse a plain delete, and a forced delete must cut it off.</summary>
public sealed class NbdAttachTests
{
    /// <summary>Fixed-newstyle handshake with NBD_OPT_EXPORT_NAME; returns the export size.</summary>
    private static async Task<long> AttachAsync(NetworkStream stream, string export, CancellationToken ct)
    {
        var hello = new byte[18];
        await stream.ReadExactlyAsync(hello, ct);
        Assert.Equal("NBDMAGICIHAVEOPT", Encoding.ASCII.GetString(hello, 0, 16));
        var name = Encoding.UTF8.GetBytes(export);
        var request = new byte[4 + 16 + name.Length];
        BinaryPrimitives.WriteUInt32BigEndian(request, 3); // FIXED_NEWSTYLE | NO_ZEROES
        Encoding.ASCII.GetBytes("IHAVEOPT").CopyTo(request, 4);
        BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(12), 1); // NBD_OPT_EXPORT_NAME
        BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(16), (uint)name.Length);
        name.CopyTo(request, 20);
        await stream.WriteAsync(request, ct);
        var reply = new byte[10];
        await stream.ReadExactlyAsync(reply, ct);
        return (long)BinaryPrimitives.ReadUInt64BigEndian(reply);
    }

    [Fact]
    public async Task A_connected_nbd_client_blocks_delete_until_forced_which_disconnects_it()
    {
        await using var d = await DaemonFixture.StartAsync(realPools: true);
        var ct = TestContext.Current.CancellationToken;
        await d.CreateAsync("attached", "16MiB");

        using var client = new TcpClient();
        await client.ConnectAsync(d.Daemon.NbdEndpoint, ct);
        var stream = client.GetStream();
        Assert.Equal(16L << 20, await AttachAsync(stream, "attached", ct));

        var shown = await DaemonFixture.JsonAsync(await d.Http.GetAsync("/api/v1/volumes/attached", ct));
        Assert.Equal(1, shown.GetProperty("clients").GetArrayLength());
        Assert.Equal(HttpStatusCode.Conflict, (await d.Http.DeleteAsync("/api/v1/volumes/attached", ct)).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await d.Http.DeleteAsync("/api/v1/volumes/attached?force=true", ct)).StatusCode);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(20));
        int read;
        try
        {
            read = await stream.ReadAsync(new byte[1], timeout.Token);
        }
        catch (IOException)
        {
            read = 0; // reset instead of FIN: also disconnected
        }
        Assert.Equal(0, read);
    }
}

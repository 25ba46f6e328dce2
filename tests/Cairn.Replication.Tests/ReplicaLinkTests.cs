using System.Net;
using System.Net.Sockets;
using Cairn.Core;
using Cairn.Testing;

namespace Cairn.Replication.Tests;

/// <summary>A real replica server and real links over loopback TCP, against a RAM device.</summary>
public sealed class ReplicaLinkTests : IAsyncLifetime
{
    private const long Size = 16 << 20;
    private readonly ReplicaCatalog _catalog = new();
    private readonly RamBlockDevice _device = new(Size);
    private readonly List<string> _warnings = [];
    private ReplicaServer _server = null!;

    public ValueTask InitializeAsync()
    {
        _catalog.Add(new ReplicaTarget("r1", _device));
        _server = new ReplicaServer(_catalog, new FrontendLog(_ => { }, w => { lock (_warnings) { _warnings.Add(w); } }, (_, _) => { }));
        _server.Start(new IPEndPoint(IPAddress.Loopback, 0));
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private Task<ReplicaLink> ConnectAsync(ulong epoch, string replica = "r1") => ReplicaLink.ConnectAsync(_server.LocalEndpoint, replica, epoch);

    private static byte[] Pattern(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public async Task Pipelined_writes_and_reads_round_trip()
    {
        await using var link = await ConnectAsync(1);
        Assert.Equal(Size, link.SizeBytes);

        var writes = Enumerable.Range(0, 300).Select(async i =>
            Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Write, ReplicaFlags.None, i * 8192L, 8192, Pattern(8192, i), default)));
        await Task.WhenAll(writes);
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default));

        var reads = Enumerable.Range(0, 300).Select(async i =>
        {
            byte[] read = new byte[8192];
            Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Read, ReplicaFlags.None, i * 8192L, 8192, default, read));
            Assert.Equal(Pattern(8192, i), read);
        });
        await Task.WhenAll(reads);
    }

    [Fact]
    public async Task Trim_and_write_zeroes_read_back_as_zeros_and_device_errors_come_back_as_statuses()
    {
        await using var link = await ConnectAsync(1);
        await link.SendAsync(ReplicaOp.Write, ReplicaFlags.ForceUnitAccess, 0, 65536, Pattern(65536, 1), default);

        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Trim, ReplicaFlags.None, 0, 4096, default, default));
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.WriteZeroes, ReplicaFlags.NoHole, 8192, 4096, default, default));
        byte[] read = new byte[65536];
        await link.SendAsync(ReplicaOp.Read, ReplicaFlags.None, 0, 65536, default, read);
        Assert.All(read[..4096], b => Assert.Equal(0, b));
        Assert.All(read[8192..12288], b => Assert.Equal(0, b));
        Assert.Equal(Pattern(65536, 1)[4096..8192], read[4096..8192]);

        Assert.Equal(ReplicaStatus.InvalidArgument, await link.SendAsync(ReplicaOp.Write, ReplicaFlags.None, Size, 4096, new byte[4096], default));
        Assert.Equal(ReplicaStatus.InvalidArgument, await link.SendAsync(ReplicaOp.Read, ReplicaFlags.None, Size - 512, 4096, default, new byte[4096]));
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default)); // still usable
    }

    [Fact]
    public async Task A_newer_epoch_fences_the_older_sender()
    {
        await using var old = await ConnectAsync(1);
        Assert.Equal(ReplicaStatus.Ok, await old.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 0, 4096, Pattern(4096, 1), default));

        await using var current = await ConnectAsync(2);

        Assert.Equal(ReplicaStatus.StaleEpoch, await old.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 0, 4096, Pattern(4096, 2), default));
        byte[] read = new byte[4096];
        await current.SendAsync(ReplicaOp.Read, ReplicaFlags.None, 0, 4096, default, read);
        Assert.Equal(Pattern(4096, 1), read); // the fenced write changed nothing
        var refused = await Assert.ThrowsAsync<ReplicaLinkException>(() => ConnectAsync(1));
        Assert.Contains("has seen epoch 2, newer than ours (1)", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unknown_replicas_are_refused()
    {
        var refused = await Assert.ThrowsAsync<ReplicaLinkException>(() => ConnectAsync(1, "nope"));
        Assert.Contains("refused the connection: Shutdown", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_malformed_frame_closes_only_its_own_connection()
    {
        await using var good = await ConnectAsync(1);
        using (var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await raw.ConnectAsync(_server.LocalEndpoint);
            await raw.SendAsync(ReplicaHello.Encode("r1", 1));
            byte[] reply = new byte[ReplicaProtocol.HelloReplySize];
            Assert.Equal(reply.Length, await raw.ReceiveAsync(reply));
            await raw.SendAsync(new byte[ReplicaProtocol.RequestHeaderSize]); // zero magic
            Assert.Equal(0, await raw.ReceiveAsync(new byte[16])); // closed by the server
        }

        Assert.Contains(_warnings, w => w.Contains("bad request magic", StringComparison.Ordinal));
        Assert.Equal(ReplicaStatus.Ok, await good.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default));
    }

    [Fact]
    public async Task A_lost_server_fails_every_request_in_flight_and_every_later_one()
    {
        var link = await ConnectAsync(1);
        await using (link)
        {
            await _server.DisposeAsync();

            var failure = await Assert.ThrowsAsync<ReplicaLinkException>(async () =>
            {
                for (int i = 0; i < 1000; i++) // the first sends may still fill the socket buffer; the link notices soon
                {
                    await link.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 0, 4096, new byte[4096], default);
                }
            });
            Assert.Contains("r1", failure.Message, StringComparison.Ordinal);
            Assert.True(link.IsBroken);
            await Assert.ThrowsAsync<ReplicaLinkException>(async () => await link.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default));
        }
    }

    [Fact]
    public async Task Grow_and_snapshot_requests_reach_the_replicas_volume_control()
    {
        var log = new List<string>();
        var control = new RecordingControl("r2", () => [], log);
        _catalog.Add(new ReplicaTarget("r2", new RamBlockDevice(Size), control));
        await using var link = await ConnectAsync(1, "r2");
        await using var plain = await ConnectAsync(1);
        byte[] name = System.Text.Encoding.UTF8.GetBytes("nightly-é");

        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Grow, ReplicaFlags.None, 2 * Size, 0, default, default));
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.CreateSnapshot, ReplicaFlags.None, 0, (uint)name.Length, name, default));
        Assert.Equal(ReplicaStatus.InvalidArgument, await link.SendAsync(ReplicaOp.CreateSnapshot, ReplicaFlags.None, 0, (uint)name.Length, name, default)); // taken
        Assert.Equal(ReplicaStatus.InvalidArgument, await link.SendAsync(ReplicaOp.CreateSnapshot, ReplicaFlags.None, 0, 2, new byte[] { 0xC3, 0x28 }, default)); // not UTF-8
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.DeleteSnapshot, ReplicaFlags.None, 0, (uint)name.Length, name, default));
        Assert.Equal(ReplicaStatus.NotSupported, await plain.SendAsync(ReplicaOp.Grow, ReplicaFlags.None, 2 * Size, 0, default, default)); // no control

        Assert.Equal([$"r2 grow {2 * Size}", "r2 snapshot nightly-é", "r2 delete nightly-é"], log);
        Assert.Equal(ReplicaStatus.Ok, await link.SendAsync(ReplicaOp.Flush, ReplicaFlags.None, 0, 0, default, default)); // the frames stayed aligned
    }

    [Fact]
    public async Task A_verify_answers_a_bitmap_of_blocks_that_fail_to_read_and_sends_no_data()
    {
        var failing = new RamBlockDevice(Size) { Fault = (op, _) => op == "read" ? BlockError.Io : null };
        _catalog.Add(new ReplicaTarget("bad", failing));
        await using var good = await ConnectAsync(1);
        await using var bad = await ConnectAsync(1, "bad");
        byte[] bitmap = new byte[ReplicaProtocol.VerifyReplyBytes];

        Assert.Equal(ReplicaStatus.Ok, await good.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, 65536, ReplicaProtocol.MaxVerifyBytes, default, bitmap));
        Assert.Equal(0UL, BitConverter.ToUInt64(bitmap));
        Assert.Equal(ReplicaStatus.Ok, await bad.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, 0, 2 * 4096 + 512, default, bitmap)); // 3 blocks, the last partial
        Assert.Equal(0b111UL, BitConverter.ToUInt64(bitmap));
        Assert.Equal(ReplicaStatus.Ok, await bad.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, 0, ReplicaProtocol.MaxVerifyBytes, default, bitmap));
        Assert.Equal(ulong.MaxValue, BitConverter.ToUInt64(bitmap));
        Assert.Equal(ReplicaStatus.InvalidArgument, await good.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, Size, 4096, default, bitmap)); // past the end

        // The replies carried exactly their bitmap: the frames after them stay aligned.
        Assert.Equal(ReplicaStatus.Ok, await good.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 0, 4096, Pattern(4096, 3), default));
        byte[] read = new byte[4096];
        Assert.Equal(ReplicaStatus.Ok, await good.SendAsync(ReplicaOp.Read, ReplicaFlags.None, 0, 4096, default, read));
        Assert.Equal(Pattern(4096, 3), read);
    }
}

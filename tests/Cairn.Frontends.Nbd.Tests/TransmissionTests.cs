using System.Buffers.Binary;
using Cairn.Core;
using static Cairn.Frontends.Nbd.Tests.NbdTestClient;

namespace Cairn.Frontends.Nbd.Tests;

public sealed class TransmissionTests
{
    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public async Task Write_then_read_round_trips_unaligned_ranges()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        var data = Pattern(10_001, 1);
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 12_345, (uint)data.Length, payload: data));
        Assert.Equal(data, await c.ReadAsync(12_345, data.Length));
        Assert.Equal(data, h.Disk.Data.Slice(12_345, data.Length).ToArray());
    }

    [Fact]
    public async Task Fua_write_reaches_the_device_as_fua_and_flush_is_forwarded()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, 512, FlagFua, new byte[512]));
        Assert.Equal(1, h.Disk.FuaWrites);
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
        Assert.Equal(1, h.Disk.Flushes);
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0, FlagFua)); // FUA is valid on every command
        Assert.Equal(EInval, await c.CommandAsync(CmdFlush, 4096, 0));
    }

    [Fact]
    public async Task Trim_and_write_zeroes_zero_the_range_and_honour_no_hole()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        var ones = Enumerable.Repeat((byte)0xFF, 3 * 4096).ToArray();
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, (uint)ones.Length, payload: ones));
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 65536, (uint)ones.Length, payload: ones));

        Assert.Equal(0u, await c.CommandAsync(CmdTrim, 0, 4096));
        Assert.Equal(AllocationState.Hole, h.Disk.PageState(0));
        Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 4096, 4096, FlagNoHole));
        Assert.Equal(AllocationState.Zero, h.Disk.PageState(4096));
        Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 65536, 4096));
        Assert.Equal(AllocationState.Hole, h.Disk.PageState(65536));
        Assert.All(await c.ReadAsync(0, 8192), b => Assert.Equal(0, b));
        Assert.All(await c.ReadAsync(8192, 4096), b => Assert.Equal(0xFF, b));

        h.Disk.FastZeroSupported = false;
        Assert.Equal(ENotSup, await c.CommandAsync(CmdWriteZeroes, 65536, 4096, FlagFastZero));
        Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 65536, 4096));
        Assert.Equal(EInval, await c.CommandAsync(CmdTrim, 0, 4096, FlagNoHole)); // NO_HOLE only belongs to WRITE_ZEROES
    }

    [Fact]
    public async Task Cache_validates_the_range_and_succeeds()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(0u, await c.CommandAsync(CmdCache, 0, 1 << 20));
        Assert.Equal(EInval, await c.CommandAsync(CmdCache, (ulong)ServerHarness.DiskBytes - 10, 11));
    }

    [Fact]
    public async Task Read_only_export_refuses_writes_with_eperm_but_reads()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, flags) = await OpenAsync(h.Port, "ro");
        await using var _c = c;
        Assert.Equal(2, flags & 2);
        Assert.Equal(EPerm, await c.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
        Assert.Equal(EPerm, await c.CommandAsync(CmdTrim, 0, 4096));
        Assert.Equal(EPerm, await c.CommandAsync(CmdWriteZeroes, 0, 4096));
        Assert.All(await c.ReadAsync(0, 4096), b => Assert.Equal(0xA5, b));
    }

    [Fact]
    public async Task Structured_read_is_one_offset_data_chunk_with_done_and_errors_are_error_chunks()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk", structured: true);
        await using var _c = c;
        var data = Pattern(5000, 2);
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 100, (uint)data.Length, payload: data));

        foreach (ushort flags in new ushort[] { 0, FlagDf })
        {
            await c.SendRequestAsync(flags, CmdRead, 42, 100, (uint)data.Length);
            var reply = await c.ReadReplyAsync();
            Assert.True(reply.Structured);
            Assert.Equal((ushort)1, reply.ChunkType); // OFFSET_DATA
            Assert.Equal((ushort)1, reply.ChunkFlags); // DONE
            Assert.Equal(42ul, reply.Cookie);
            Assert.Equal(100ul, BinaryPrimitives.ReadUInt64BigEndian(reply.Payload));
            Assert.Equal(data, reply.Payload[8..]);
        }

        h.Disk.Fault = (op, offset) => op == "read" && offset == 8192 ? BlockError.Io : null;
        await c.SendRequestAsync(0, CmdRead, 43, 8192, 4096);
        var error = await c.ReadReplyAsync();
        Assert.Equal((ushort)0x8001, error.ChunkType);
        Assert.Equal((ushort)1, error.ChunkFlags);
        Assert.Equal(EIo, error.Error);

        // The connection is still in sync after the error.
        Assert.Equal(data[..10], (await ReadStructuredAsync(c, 100, 10)));
    }

    private static async Task<byte[]> ReadStructuredAsync(NbdTestClient c, ulong offset, int length)
    {
        await c.SendRequestAsync(0, CmdRead, 5, offset, (uint)length);
        var reply = await c.ReadReplyAsync();
        Assert.Equal((ushort)1, reply.ChunkType);
        return reply.Payload[8..];
    }

    [Fact]
    public async Task Simple_read_error_sends_no_data_and_the_stream_stays_in_sync()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        h.Disk.Fault = (op, offset) => op == "read" && offset == 0 ? BlockError.Io : null;
        await c.SendRequestAsync(0, CmdRead, 1, 0, 4096);
        var reply = await c.ReadReplyAsync(4096);
        Assert.Equal(EIo, reply.Error);
        Assert.Empty(reply.Payload);
        Assert.Equal(4096, (await c.ReadAsync(4096, 4096)).Length);
    }

    [Theory]
    [InlineData(BlockError.NoSpace, ENoSpc)]
    [InlineData(BlockError.ReadOnly, EPerm)]
    [InlineData(BlockError.InvalidArgument, EInval)]
    [InlineData(BlockError.NotSupported, ENotSup)]
    [InlineData(BlockError.Shutdown, 108u)]
    [InlineData(BlockError.Io, EIo)]
    public async Task Device_errors_map_to_nbd_errno(BlockError error, uint errno)
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        h.Disk.Fault = (op, _) => op == "write" ? error : null;
        Assert.Equal(errno, await c.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
    }

    [Fact]
    public async Task Block_status_reports_holes_data_and_zeroes_within_the_request()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk", structured: true, meta: true);
        await using var _c = c;
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 8192, 8192, payload: Pattern(8192, 3)));
        Assert.Equal(0u, await c.CommandAsync(CmdWriteZeroes, 16384, 4096, FlagNoHole));

        await c.SendRequestAsync(0, CmdBlockStatus, 77, 0, 65536);
        var reply = await c.ReadReplyAsync();
        Assert.Equal((ushort)5, reply.ChunkType);
        Assert.Equal((ushort)1, reply.ChunkFlags);
        Assert.Equal(77ul, reply.Cookie);
        var extents = Descriptors(reply.Payload);
        Assert.Equal(new (uint, uint)[] { (8192, 3), (8192, 0), (4096, 2), (65536 - 20480, 3) }, extents);

        // REQ_ONE: a single descriptor, never longer than asked.
        await c.SendRequestAsync(FlagReqOne, CmdBlockStatus, 78, 0, 1000);
        var one = Descriptors((await c.ReadReplyAsync()).Payload);
        Assert.Equal(new (uint, uint)[] { (1000, 3) }, one);

        // Unaligned start inside the data run, clipped to the request.
        await c.SendRequestAsync(0, CmdBlockStatus, 79, 9000, 100);
        Assert.Equal(new (uint, uint)[] { (100, 0) }, Descriptors((await c.ReadReplyAsync()).Payload));

        Assert.Equal(EInval, await c.CommandAsync(CmdBlockStatus, (ulong)ServerHarness.DiskBytes, 1));
    }

    [Fact]
    public async Task Block_status_without_meta_context_is_einval()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk", structured: true);
        await using var _c = c;
        Assert.Equal(EInval, await c.CommandAsync(CmdBlockStatus, 0, 4096));
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
    }

    [Fact]
    public async Task Meta_context_for_another_export_does_not_carry_over_to_go()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptStructuredReply, []);
        await c.ReadOptionReplyAsync();
        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("ro", "base:allocation"));
        await c.ReadOptionReplyAsync();
        await c.ReadOptionReplyAsync();
        await c.GoAsync("disk");
        Assert.Equal(EInval, await c.CommandAsync(CmdBlockStatus, 0, 4096));
    }

    private static (uint Length, uint Flags)[] Descriptors(byte[] payload)
    {
        Assert.Equal(0, (payload.Length - 4) % 8);
        Assert.NotEqual(0u, BinaryPrimitives.ReadUInt32BigEndian(payload));
        var list = new List<(uint, uint)>();
        for (int at = 4; at < payload.Length; at += 8)
        {
            list.Add((BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(at)), BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(at + 4))));
        }
        return [.. list];
    }

    [Theory]
    [InlineData(false, false, NbdTransportKind.Epoll)]
    [InlineData(true, false, NbdTransportKind.Epoll)]
    [InlineData(false, true, NbdTransportKind.Epoll)]
    [InlineData(true, true, NbdTransportKind.Epoll)]
    [InlineData(false, false, NbdTransportKind.Sockets)]
    [InlineData(true, true, NbdTransportKind.Sockets)]
    internal async Task Pipelined_requests_all_get_their_own_replies(bool asynchronousDevice, bool structured, NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(configure: o =>
        {
            o.MaxInFlightPerConnection = 8;
            o.Transport = transport;
        });
        h.Disk.Asynchronous = asynchronousDevice;
        var (c, _, _) = await OpenAsync(h.Port, "disk", structured);
        await using var _c = c;
        const int count = 200;
        var blocks = Enumerable.Range(0, count).Select(i => Pattern(4096 + i, i)).ToArray();
        var batch = new MemoryStream();
        for (int i = 0; i < count; i++)
        {
            batch.Write(Request(0, CmdWrite, (ulong)i, (ulong)i * 8192, (uint)blocks[i].Length, blocks[i]));
        }
        await c.SendAsync(batch.ToArray());
        var seen = new HashSet<ulong>();
        for (int i = 0; i < count; i++)
        {
            var reply = await c.ReadReplyAsync();
            Assert.Equal(0u, reply.Error);
            Assert.True(seen.Add(reply.Cookie));
        }

        batch.SetLength(0);
        for (int i = 0; i < count; i++)
        {
            batch.Write(Request(0, CmdRead, 1000 + (ulong)i, (ulong)i * 8192, (uint)blocks[i].Length));
        }
        await c.SendAsync(batch.ToArray());
        for (int i = 0; i < count; i++)
        {
            // Replies may come out of order; the length of each block tells which one it is.
            var magic = await c.ReadExactAsync(4);
            var rest = await c.ReadExactAsync(structured ? 16 : 12);
            int index;
            byte[] data;
            if (structured)
            {
                index = (int)(BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)) - 1000);
                int length = (int)BinaryPrimitives.ReadUInt32BigEndian(rest.AsSpan(12));
                data = (await c.ReadExactAsync(length))[8..];
            }
            else
            {
                Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(rest));
                index = (int)(BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)) - 1000);
                data = await c.ReadExactAsync(blocks[index].Length);
            }
            Assert.Equal(blocks[index], data);
        }
    }

    [Theory]
    [InlineData(false, NbdTransportKind.Epoll)]
    [InlineData(true, NbdTransportKind.Epoll)]
    [InlineData(false, NbdTransportKind.Sockets)]
    [InlineData(true, NbdTransportKind.Sockets)]
    internal async Task Large_writes_and_reads_beyond_the_connection_buffers_work(bool asynchronousDevice, NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(configure: o => o.Transport = transport);
        h.Disk.Asynchronous = asynchronousDevice;
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        var big = Pattern(32 << 20, 9);
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 4096, (uint)big.Length, payload: big));
        var medium = Pattern(1 << 20, 10);
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, (uint)medium.Length, payload: medium));
        Assert.Equal(medium, await c.ReadAsync(0, medium.Length));
        Assert.Equal(big[(1 << 20)..], await c.ReadAsync((1 << 20) + 4096, big.Length - (1 << 20)));
    }

    [Fact]
    public async Task Disconnect_replies_to_earlier_requests_then_closes_and_releases_the_session()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        var batch = Request(0, CmdWrite, 1, 0, 4, [9, 9, 9, 9]).Concat(Request(0, CmdDisc, 2, 0, 0)).ToArray();
        await c.SendAsync(batch);
        var reply = await c.ReadReplyAsync();
        Assert.Equal((1ul, 0u), (reply.Cookie, reply.Error));
        Assert.True(await c.IsClosedByServerAsync());
        await h.Catalog.WaitForNoSessionsAsync();
        Assert.Equal(9, h.Disk.Data[3]);
    }

    [Fact]
    public async Task Multiple_connections_share_the_export()
    {
        await using var h = await ServerHarness.StartAsync();
        var (a, _, flags) = await OpenAsync(h.Port, "disk");
        var (b, _, _) = await OpenAsync(h.Port, "disk");
        await using var _a = a;
        await using var _b = b;
        Assert.Equal(256, flags & 256); // CAN_MULTI_CONN
        Assert.Equal(2, h.Server.ActiveConnections);
        Assert.Equal(0u, await a.CommandAsync(CmdWrite, 0, 3, payload: [7, 8, 9]));
        Assert.Equal(new byte[] { 7, 8, 9 }, await b.ReadAsync(0, 3));
    }

    [Fact]
    public async Task Revoking_the_session_drops_the_connection()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
        Assert.Single(h.Catalog.Sessions).Revoke();
        Assert.True(await c.IsClosedByServerAsync());
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Disposing_the_server_closes_every_connection()
    {
        var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        await h.DisposeAsync();
        Assert.True(await c.IsClosedByServerAsync());
        Assert.Equal(0, h.Server.ActiveConnections);
        Assert.Equal(0, h.Catalog.OpenSessions);
    }

    [Fact]
    public async Task Connections_beyond_the_limit_are_closed()
    {
        await using var h = await ServerHarness.StartAsync(configure: o => o.MaxConnections = 1);
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        using var second = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await second.ConnectAsync(System.Net.IPAddress.Loopback, h.Port, TestContext.Current.CancellationToken);
        var buffer = new byte[64];
        using var cts = new CancellationTokenSource(10_000);
        int n;
        try
        {
            n = await second.ReceiveAsync(buffer, System.Net.Sockets.SocketFlags.None, cts.Token);
        }
        catch (System.Net.Sockets.SocketException)
        {
            n = 0;
        }
        Assert.Equal(0, n);
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
    }

    [Fact]
    public async Task Asynchronous_device_runs_requests_concurrently_within_the_in_flight_bound()
    {
        await using var h = await ServerHarness.StartAsync(configure: o => o.MaxInFlightPerConnection = 4);
        h.Disk.Asynchronous = true;
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        var batch = new MemoryStream();
        for (int i = 0; i < 100; i++)
        {
            batch.Write(Request(FlagFua, CmdWrite, (ulong)i, (ulong)i * 4096, 4096, Pattern(4096, i)));
        }
        await c.SendAsync(batch.ToArray());
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal(0u, (await c.ReadReplyAsync()).Error);
        }
        Assert.Equal(100, h.Disk.FuaWrites);
        // Concurrency happened, and never beyond the background slots plus the one request awaited in place.
        Assert.InRange(h.Disk.MaxConcurrentSeen, 2, 4 + 1);
        for (int i = 0; i < 100; i += 17)
        {
            Assert.Equal(Pattern(4096, i), await c.ReadAsync((ulong)i * 4096, 4096));
        }
    }

    /// <summary>
    /// Background replies queue for the one sender. A client that pipelines large reads and leaves without reading a
    /// single reply breaks a send mid-queue: the queued buffers and slots must all come back so the session ends.
    /// (A leaked slot would hang the server's shutdown too, hence the test timeout.)
    /// </summary>
    [Theory(Timeout = 120_000)]
    [InlineData(NbdTransportKind.Epoll)]
    [InlineData(NbdTransportKind.Sockets)]
    internal async Task A_client_that_leaves_with_replies_queued_still_ends_its_session(NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(configure: o =>
        {
            o.MaxInFlightPerConnection = 8;
            o.Transport = transport;
        });
        h.Disk.Asynchronous = true;
        var (c, _, _) = await OpenAsync(h.Port, "disk", structured: true);
        var batch = new MemoryStream();
        for (int i = 0; i < 24; i++)
        {
            batch.Write(Request(0, CmdRead, (ulong)i, (ulong)(i % 16) << 20, 1 << 20)); // far more than the socket buffers hold
        }
        await c.SendAsync(batch.ToArray());
        await Task.Delay(200); // let replies pile up against the full socket
        c.Close();
        await h.Catalog.WaitForNoSessionsAsync().WaitAsync(TimeSpan.FromSeconds(30));

        // The server is fine: a new connection reads and writes.
        var (d, _, _) = await OpenAsync(h.Port, "disk");
        await using var _d = d;
        Assert.Equal(0u, await d.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, await d.ReadAsync(0, 4));
    }

    [Fact]
    public async Task Switching_between_synchronous_and_asynchronous_completion_keeps_data_and_replies_intact()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk", structured: true, meta: true);
        await using var _c = c;
        for (int phase = 0; phase < 4; phase++)
        {
            h.Disk.Asynchronous = phase % 2 == 0;
            int count = phase % 2 == 0 ? 50 : 1100; // more than the streak that returns a connection to inline mode
            var batch = new MemoryStream();
            for (int i = 0; i < count; i++)
            {
                batch.Write(Request(0, CmdWrite, (ulong)i, (ulong)(i % 500) * 4096, 4096, Pattern(4096, phase * 10_000 + i)));
            }
            batch.Write(Request(0, CmdFlush, 99_999, 0, 0));
            await c.SendAsync(batch.ToArray());
            for (int i = 0; i <= count; i++)
            {
                Assert.Equal(0u, (await c.ReadReplyAsync()).Error);
            }
            int last = count - 1;
            await c.SendRequestAsync(0, CmdRead, 5, (ulong)(last % 500) * 4096, 4096);
            var reply = await c.ReadReplyAsync();
            Assert.Equal(Pattern(4096, phase * 10_000 + last), reply.Payload[8..]);
            await c.SendRequestAsync(0, CmdBlockStatus, 6, 0, 4096);
            Assert.Equal((ushort)5, (await c.ReadReplyAsync()).ChunkType);
        }
    }

    [Theory]
    [InlineData(NbdTransportKind.Epoll)]
    [InlineData(NbdTransportKind.Sockets)]
    internal async Task Many_concurrent_connections_each_keep_their_own_data(NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(configure: o => o.Transport = transport);
        var clients = await Task.WhenAll(Enumerable.Range(0, 40).Select(_ => OpenAsync(h.Port, "disk")));
        Assert.Equal(40, h.Server.ActiveConnections);
        await Task.WhenAll(clients.Select(async (client, i) =>
        {
            var c = client.Client;
            for (int round = 0; round < 20; round++)
            {
                var block = Pattern(4096, i * 1000 + round);
                Assert.Equal(0u, await c.CommandAsync(CmdWrite, (ulong)i * 65536, 4096, payload: block));
                Assert.Equal(block, await c.ReadAsync((ulong)i * 65536, 4096));
            }
        }));
        foreach (var (c, _, _) in clients)
        {
            await c.DisposeAsync();
        }
        await h.Catalog.WaitForNoSessionsAsync();
    }
}

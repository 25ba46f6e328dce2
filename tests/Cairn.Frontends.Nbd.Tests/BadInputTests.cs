using System.Buffers.Binary;
using static Cairn.Frontends.Nbd.Tests.NbdTestClient;

namespace Cairn.Frontends.Nbd.Tests;

/// <summary>Malformed or hostile input: each gets an error or a closed connection, while a second connection and the data carry on.</summary>
public sealed class BadInputTests
{
    /// <summary>A bystander connection that writes a known block before the attack and checks it after.</summary>
    private sealed class Bystander : IAsyncDisposable
    {
        private readonly NbdTestClient _client;
        private readonly byte[] _block;

        private Bystander(NbdTestClient client, byte[] block)
        {
            _client = client;
            _block = block;
        }

        public static async Task<Bystander> StartAsync(ServerHarness h)
        {
            var (client, _, _) = await OpenAsync(h.Port, "disk");
            var block = new byte[4096];
            new Random(99).NextBytes(block);
            Assert.Equal(0u, await client.CommandAsync(CmdWrite, 1 << 20, 4096, payload: block));
            return new Bystander(client, block);
        }

        public async Task AssertStillWorksAsync(ServerHarness h)
        {
            Assert.Equal(_block, await _client.ReadAsync(1 << 20, 4096));
            Assert.Equal(0u, await _client.CommandAsync(CmdWrite, 2 << 20, 4096, payload: _block));
            Assert.Equal(_block, await _client.ReadAsync(2 << 20, 4096));
            Assert.Equal(_block, h.Disk.Data.Slice(1 << 20, 4096).ToArray());
        }

        public ValueTask DisposeAsync() => _client.DisposeAsync();
    }

    [Theory]
    [InlineData(NbdTransportKind.Epoll)]
    [InlineData(NbdTransportKind.Sockets)]
    internal async Task Bad_request_magic_closes_only_that_connection(NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(configure: o => o.Transport = transport);
        await using var bystander = await Bystander.StartAsync(h);
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        await c.SendAsync(Request(0, CmdRead, 1, 0, 4096, magic: 0xdeadbeef));
        Assert.True(await c.IsClosedByServerAsync());
        await WaitForSessionsAsync(h, 1);
        await bystander.AssertStillWorksAsync(h);
    }

    [Fact]
    public async Task Unknown_command_gets_einval_and_the_connection_continues()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(EInval, await c.CommandAsync(99, 0, 4096));
        Assert.Equal(EInval, await c.CommandAsync(8, 0, 0)); // RESIZE is not offered
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
    }

    [Fact]
    public async Task Unknown_or_misplaced_command_flags_get_einval()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(EInval, await c.CommandAsync(CmdRead, 0, 4096, flags: 0x4000));
        Assert.Equal(EInval, await c.CommandAsync(CmdRead, 0, 4096, flags: FlagDf)); // DF needs structured replies
        Assert.Equal(EInval, await c.CommandAsync(CmdWrite, 0, 4, flags: FlagReqOne, payload: [1, 2, 3, 4])); // payload still consumed
        Assert.Equal(new byte[] { 0, 0, 0, 0 }, await c.ReadAsync(0, 4));
        await c.SendRequestAsync(FlagFua, CmdRead, 3, 0, 4);
        Assert.Equal(0u, (await c.ReadReplyAsync(4)).Error);
    }

    [Fact]
    public async Task Ranges_past_the_export_get_einval_or_enospc_for_writes()
    {
        await using var h = await ServerHarness.StartAsync();
        var (c, size, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(EInval, await c.CommandAsync(CmdRead, size - 100, 101));
        Assert.Equal(EInval, await c.CommandAsync(CmdRead, ulong.MaxValue - 10, 100)); // offset + length overflows 64 bits
        Assert.Equal(EInval, await c.CommandAsync(CmdTrim, size, 1));
        Assert.Equal(ENoSpc, await c.CommandAsync(CmdWrite, size - 2, 4, payload: [1, 2, 3, 4]));
        Assert.Equal(ENoSpc, await c.CommandAsync(CmdWriteZeroes, size, 4096));
        Assert.Equal(EInval, await c.CommandAsync(CmdRead, 0, 0)); // zero-length requests are meaningless
        Assert.Equal(new byte[] { 0, 0 }, await c.ReadAsync(size - 2, 2));
    }

    [Fact]
    public async Task Read_above_32_mib_is_einval_and_write_above_32_mib_closes()
    {
        await using var h = await ServerHarness.StartAsync(diskBytes: 128L << 20);
        await using var bystander = await Bystander.StartAsync(h);
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await using var _c = c;
        Assert.Equal(EInval, await c.CommandAsync(CmdRead, 0, (32u << 20) + 1));
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
        await c.SendAsync(Request(0, CmdWrite, 5, 0, (32u << 20) + 1));
        Assert.True(await c.IsClosedByServerAsync());
        await bystander.AssertStillWorksAsync(h);
    }

    [Fact]
    public async Task Truncated_request_header_then_close_is_quiet()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var bystander = await Bystander.StartAsync(h);
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await c.SendAsync(Request(0, CmdRead, 1, 0, 4096)[..13]);
        await Task.Delay(50, TestContext.Current.CancellationToken);
        await c.DisposeAsync();
        await WaitForSessionsAsync(h, 1);
        await bystander.AssertStillWorksAsync(h);
    }

    [Theory]
    [InlineData(NbdTransportKind.Epoll)]
    [InlineData(NbdTransportKind.Sockets)]
    internal async Task Disconnect_mid_write_payload_leaves_the_data_untouched(NbdTransportKind transport)
    {
        await using var h = await ServerHarness.StartAsync(configure: o => o.Transport = transport);
        await using var bystander = await Bystander.StartAsync(h);
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        var payload = Enumerable.Repeat((byte)0xEE, 65536).ToArray();
        await c.SendAsync(Request(0, CmdWrite, 1, 8 << 20, 65536, payload)[..(28 + 30_000)]);
        await Task.Delay(50, TestContext.Current.CancellationToken);
        await c.DisposeAsync();
        await WaitForSessionsAsync(h, 1);
        await bystander.AssertStillWorksAsync(h);
        Assert.All(h.Disk.Data.Slice(8 << 20, 65536).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Disconnect_mid_large_write_payload_is_quiet()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var bystander = await Bystander.StartAsync(h);
        var (c, _, _) = await OpenAsync(h.Port, "disk");
        await c.SendAsync(Request(0, CmdWrite, 1, 4 << 20, 8 << 20, new byte[1 << 20]));
        await Task.Delay(50, TestContext.Current.CancellationToken);
        await c.DisposeAsync();
        await WaitForSessionsAsync(h, 1);
        await bystander.AssertStillWorksAsync(h);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(10)]
    [InlineData(18)]
    [InlineData(22)]
    [InlineData(30)]
    public async Task Disconnect_mid_handshake_is_quiet(int bytesSent)
    {
        await using var h = await ServerHarness.StartAsync();
        await using var bystander = await Bystander.StartAsync(h);
        await using (var c = await ConnectAsync(h.Port))
        {
            var option = new byte[4 + 16 + 20];
            BinaryPrimitives.WriteUInt32BigEndian(option, 3);
            BinaryPrimitives.WriteUInt64BigEndian(option.AsSpan(4), IHaveOpt);
            BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(12), OptGo);
            BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(16), 20);
            await c.SendAsync(option[..bytesSent]);
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
        await WaitForSessionsAsync(h, 1);
        await bystander.AssertStillWorksAsync(h);
        for (int i = 0; i < 100 && h.Server.ActiveConnections != 1; i++)
        {
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
        Assert.Equal(1, h.Server.ActiveConnections);
    }

    [Fact]
    public async Task Garbage_after_connect_is_dropped()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var bystander = await Bystander.StartAsync(h);
        await using (var c = await ConnectAsync(h.Port))
        {
            var garbage = new byte[100_000];
            new Random(5).NextBytes(garbage);
            try
            {
                await c.SendAsync(garbage);
            }
            catch (System.Net.Sockets.SocketException)
            {
                // The server may already have closed on the first 4 bytes.
            }
            Assert.True(await c.IsClosedByServerAsync(drainBytesAllowed: 0));
        }
        await bystander.AssertStillWorksAsync(h);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task Random_well_framed_requests_get_one_reply_each_and_hurt_no_one(int seed)
    {
        await using var h = await ServerHarness.StartAsync();
        await using var bystander = await Bystander.StartAsync(h);
        var (c, size, _) = await OpenAsync(h.Port, "disk", structured: seed % 2 == 0, meta: seed % 2 == 0);
        await using var _c = c;
        var random = new Random(seed);
        var batch = new MemoryStream();
        const int count = 300;
        for (int i = 0; i < count; i++)
        {
            ushort command = (ushort)random.Next(0, 12);
            if (command == CmdDisc)
            {
                command = 42; // unknown, answered with EINVAL; a real DISC would end the test early
            }
            ushort flags = (ushort)(random.Next(4) == 0 ? random.Next(0, 0x40) : 0);
            ulong offset = random.Next(3) switch
            {
                0 => (ulong)random.NextInt64(0, (long)size),
                1 => size - (ulong)random.Next(0, 8192),
                _ => (ulong)random.NextInt64(),
            };
            // Writes stay within 1 MiB (below the bystander's blocks) so the bystander's data must survive.
            if (command == CmdWrite || command == CmdTrim || command == CmdWriteZeroes)
            {
                offset %= 1 << 20;
            }
            uint length = (uint)random.Next(0, 70_000);
            if ((command == CmdWrite || command == CmdTrim || command == CmdWriteZeroes) && offset + length > (1 << 20))
            {
                length = (uint)((1 << 20) - offset);
            }
            byte[]? payload = command == CmdWrite ? new byte[length] : null;
            batch.Write(Request(flags, command, (ulong)i, offset, length, payload));
        }
        await c.SendAsync(batch.ToArray());

        // Every request is answered exactly once, in whatever order, and the stream stays framed.
        var cookies = new HashSet<ulong>();
        while (cookies.Count < count)
        {
            var magic = await c.ReadExactAsync(4);
            uint m = BinaryPrimitives.ReadUInt32BigEndian(magic);
            if (m == SimpleReplyMagic)
            {
                var rest = await c.ReadExactAsync(12);
                ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4));
                uint error = BinaryPrimitives.ReadUInt32BigEndian(rest);
                // A successful simple read carries its data: find the request's length to skip it.
                if (error == 0 && IsRead(batch, cookie, out uint readLength))
                {
                    await c.ReadExactAsync((int)readLength);
                }
                Assert.True(cookies.Add(cookie), $"cookie {cookie} answered twice");
            }
            else
            {
                Assert.Equal(StructuredReplyMagic, m);
                var rest = await c.ReadExactAsync(16);
                Assert.Equal(1, BinaryPrimitives.ReadUInt16BigEndian(rest) & 1); // every chunk we send is final
                await c.ReadExactAsync((int)BinaryPrimitives.ReadUInt32BigEndian(rest.AsSpan(12)));
                Assert.True(cookies.Add(BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4))));
            }
        }
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
        await bystander.AssertStillWorksAsync(h);
    }

    /// <summary>Looks the request with <paramref name="cookie"/> up in the sent batch (headers are walked by their framing).</summary>
    private static bool IsRead(MemoryStream batch, ulong cookie, out uint length)
    {
        var bytes = batch.GetBuffer().AsSpan(0, (int)batch.Length);
        int at = 0;
        while (at < bytes.Length)
        {
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(bytes[(at + 6)..]);
            ulong c = BinaryPrimitives.ReadUInt64BigEndian(bytes[(at + 8)..]);
            length = BinaryPrimitives.ReadUInt32BigEndian(bytes[(at + 24)..]);
            if (c == cookie)
            {
                return type == CmdRead;
            }
            at += 28 + (type == CmdWrite ? (int)length : 0);
        }
        length = 0;
        return false;
    }

    private static async Task WaitForSessionsAsync(ServerHarness h, int expected)
    {
        for (int i = 0; i < 500 && h.Catalog.OpenSessions != expected; i++)
        {
            await Task.Delay(10, TestContext.Current.CancellationToken);
        }
        Assert.Equal(expected, h.Catalog.OpenSessions);
    }
}

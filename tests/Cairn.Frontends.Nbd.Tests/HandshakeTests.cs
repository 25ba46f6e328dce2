using System.Buffers.Binary;
using System.Text;
using static Cairn.Frontends.Nbd.Tests.NbdTestClient;

namespace Cairn.Frontends.Nbd.Tests;

public sealed class HandshakeTests
{
    private const ushort ExpectedWritableFlags = 1 | 4 | 8 | 32 | 64 | 256 | 1024 | 2048; // HAS_FLAGS FLUSH FUA TRIM WRITE_ZEROES MULTI_CONN CACHE FAST_ZERO

    [Fact]
    public async Task Greeting_advertises_fixed_newstyle_and_no_zeroes()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        Assert.Equal(3, c.HandshakeFlags);
    }

    [Fact]
    public async Task Go_on_default_export_sends_exact_info_replies()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptGo, InfoData("", 1, 2, 3));
        var infos = new Dictionary<ushort, byte[]>();
        while (true)
        {
            var (option, type, data) = await c.ReadOptionReplyAsync();
            Assert.Equal(OptGo, option);
            if (type == RepAck)
            {
                break;
            }
            Assert.Equal(RepInfo, type);
            infos[BinaryPrimitives.ReadUInt16BigEndian(data)] = data;
        }
        Assert.Equal(12, infos[0].Length);
        Assert.Equal((ulong)ServerHarness.DiskBytes, BinaryPrimitives.ReadUInt64BigEndian(infos[0].AsSpan(2)));
        Assert.Equal(ExpectedWritableFlags, BinaryPrimitives.ReadUInt16BigEndian(infos[0].AsSpan(10)));
        Assert.Equal("disk", Encoding.UTF8.GetString(infos[1].AsSpan(2)));
        Assert.Equal("the test disk", Encoding.UTF8.GetString(infos[2].AsSpan(2)));
        Assert.Equal(14, infos[3].Length);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(2)));
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(6)));
        Assert.Equal(32u << 20, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(10)));

        // Transmission works right after the ACK.
        Assert.Equal(0u, await c.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, await c.ReadAsync(0, 4));
    }

    [Fact]
    public async Task Info_answers_without_entering_transmission_and_releases_the_session()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptInfo, InfoData("ro", 3));
        var first = await c.ReadOptionReplyAsync();
        Assert.Equal((OptInfo, RepInfo), (first.Option, first.Type));
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(first.Data.AsSpan(10));
        Assert.Equal(2, flags & 2); // READ_ONLY
        Assert.Equal(0, flags & 32); // no TRIM on a read-only export
        var block = await c.ReadOptionReplyAsync();
        Assert.Equal(14, block.Data.Length);
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type);
        await h.Catalog.WaitForNoSessionsAsync();

        var (size, _) = await c.GoAsync("disk");
        Assert.Equal((ulong)ServerHarness.DiskBytes, size);
        Assert.Equal(1, h.Catalog.OpenSessions);
    }

    [Fact]
    public async Task Info_with_inconsistent_lengths_is_invalid_and_parsing_goes_on()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        var data = InfoData("disk", 3);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(8), 5); // claims 5 info requests, carries 1
        await c.SendOptionAsync(OptInfo, data);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        var nameTooLong = InfoData("disk");
        BinaryPrimitives.WriteUInt32BigEndian(nameTooLong, 1000);
        await c.SendOptionAsync(OptGo, nameTooLong);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        await c.GoAsync("disk");
    }

    [Fact]
    public async Task List_returns_each_export_with_a_correct_length_then_ack()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptList, []);
        var names = new Dictionary<string, string>();
        while (true)
        {
            var (_, type, data) = await c.ReadOptionReplyAsync();
            if (type == RepAck)
            {
                break;
            }
            Assert.Equal(RepServer, type);
            int nameLength = (int)BinaryPrimitives.ReadUInt32BigEndian(data);
            Assert.True(nameLength <= data.Length - 4);
            names[Encoding.UTF8.GetString(data, 4, nameLength)] = Encoding.UTF8.GetString(data, 4 + nameLength, data.Length - 4 - nameLength);
        }
        Assert.Equal("the test disk", names["disk"]);
        Assert.Equal("a read-only disk", names["ro"]);

        await c.SendOptionAsync(OptList, [1]);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Export_name_old_style_replies_with_or_without_zero_padding(bool noZeroes)
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(noZeroes ? 3u : 1u);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("disk"));
        var reply = await c.ReadExactAsync(noZeroes ? 10 : 134);
        Assert.Equal((ulong)ServerHarness.DiskBytes, BinaryPrimitives.ReadUInt64BigEndian(reply));
        Assert.Equal(ExpectedWritableFlags, BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8)));
        Assert.All(reply.Skip(10), b => Assert.Equal(0, b));
        // The very next bytes must be the reply to our first request: nothing extra was sent.
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
    }

    [Fact]
    public async Task Export_name_for_unknown_export_closes_the_connection()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("nope"));
        Assert.True(await c.IsClosedByServerAsync());
    }

    [Fact]
    public async Task Export_name_empty_picks_the_default_export()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptExportName, []);
        var reply = await c.ReadExactAsync(10);
        Assert.Equal((ulong)ServerHarness.DiskBytes, BinaryPrimitives.ReadUInt64BigEndian(reply));
        Assert.Equal("disk", Assert.Single(h.Catalog.Sessions).ExportName);
    }

    [Fact]
    public async Task Abort_is_acknowledged_then_closed_and_releases_nothing()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptAbort, []);
        var reply = await c.ReadOptionReplyAsync();
        Assert.Equal((OptAbort, RepAck), (reply.Option, reply.Type));
        Assert.True(await c.IsClosedByServerAsync());
        Assert.Equal(0, h.Catalog.OpenSessions);
    }

    [Fact]
    public async Task Unknown_option_gets_err_unsup_and_go_still_works()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(0x1234, [1, 2, 3, 4, 5]);
        var reply = await c.ReadOptionReplyAsync();
        Assert.Equal((0x1234u, RepErrUnsup), (reply.Option, reply.Type));
        await c.SendOptionAsync(5, []); // STARTTLS is not offered
        Assert.Equal(RepErrUnsup, (await c.ReadOptionReplyAsync()).Type);
        var (size, _) = await c.GoAsync("disk");
        Assert.Equal((ulong)ServerHarness.DiskBytes, size);
    }

    [Fact]
    public async Task Unknown_export_gets_err_unknown_and_a_retry_works()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptGo, InfoData("missing"));
        var reply = await c.ReadOptionReplyAsync();
        Assert.Equal(RepErrUnknown, reply.Type);
        Assert.Contains("missing", Encoding.UTF8.GetString(reply.Data));
        await c.GoAsync("ro");
        Assert.Equal("ro", Assert.Single(h.Catalog.Sessions).ExportName);
    }

    [Fact]
    public async Task No_default_export_means_empty_name_is_unknown()
    {
        await using var h = await ServerHarness.StartAsync();
        h.Catalog.DefaultExportName = null;
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptGo, InfoData(""));
        Assert.Equal(RepErrUnknown, (await c.ReadOptionReplyAsync()).Type);
    }

    [Fact]
    public async Task Structured_reply_option_rejects_data_and_enables_df()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptStructuredReply, [0]);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        await c.SendOptionAsync(OptStructuredReply, []);
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type);
        var (_, flags) = await c.GoAsync("disk");
        Assert.Equal(128, flags & 128); // SEND_DF
    }

    [Fact]
    public async Task Meta_context_needs_structured_replies_and_lists_base_allocation()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("disk", "base:allocation"));
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        await c.SendOptionAsync(OptStructuredReply, []);
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type);

        await c.SendOptionAsync(OptListMetaContext, MetaContextData("disk"));
        var listed = await c.ReadOptionReplyAsync();
        Assert.Equal(RepMetaContext, listed.Type);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(listed.Data));
        Assert.Equal("base:allocation", Encoding.UTF8.GetString(listed.Data.AsSpan(4)));
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type);

        await c.SendOptionAsync(OptListMetaContext, MetaContextData("disk", "qemu:dirty-bitmap:x"));
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type); // nothing matched: just the ACK

        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("nope", "base:allocation"));
        Assert.Equal(RepErrUnknown, (await c.ReadOptionReplyAsync()).Type);

        var truncated = MetaContextData("disk", "base:allocation")[..^3];
        await c.SendOptionAsync(OptSetMetaContext, truncated);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);

        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("disk", "x-other:thing", "base:allocation"));
        var set = await c.ReadOptionReplyAsync();
        Assert.Equal(RepMetaContext, set.Type);
        Assert.NotEqual(0u, BinaryPrimitives.ReadUInt32BigEndian(set.Data));
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type);
    }

    [Fact]
    public async Task Client_without_fixed_newstyle_or_with_unknown_flags_is_dropped()
    {
        await using var h = await ServerHarness.StartAsync();
        await using (var c = await ConnectAsync(h.Port))
        {
            await c.SendClientFlagsAsync(3 | 0x100);
            Assert.True(await c.IsClosedByServerAsync());
        }
        await using (var c = await ConnectAsync(h.Port))
        {
            await c.SendClientFlagsAsync(0);
            Assert.True(await c.IsClosedByServerAsync());
        }
    }

    [Fact]
    public async Task Bad_option_magic_closes_the_connection()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptList, [], magic: 0x1122334455667788);
        Assert.True(await c.IsClosedByServerAsync());
    }

    [Fact]
    public async Task Oversized_option_closes_the_connection()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await ConnectAsync(h.Port);
        await c.SendClientFlagsAsync(3);
        var header = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(header, IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), OptGo);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), 0x7FFFFFFF);
        await c.SendAsync(header);
        Assert.True(await c.IsClosedByServerAsync());
    }
}

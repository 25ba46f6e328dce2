using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Cairn.Frontends.Nbd.Tests;

/// <summary>A deliberately small, strict NBD client that speaks raw bytes, so tests can also send what real clients never would.</summary>
public sealed class NbdTestClient : IAsyncDisposable
{
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptInfo = 6, OptGo = 7, OptStructuredReply = 8, OptListMetaContext = 9, OptSetMetaContext = 10;
    public const uint RepAck = 1, RepServer = 2, RepInfo = 3, RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001, RepErrInvalid = 0x80000003, RepErrUnknown = 0x80000006;
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdCache = 5, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    public const ushort FlagFua = 1, FlagNoHole = 2, FlagDf = 4, FlagReqOne = 8, FlagFastZero = 16;
    public const uint EPerm = 1, EIo = 5, EInval = 22, ENoSpc = 28, ENotSup = 95;

    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    private readonly Socket _socket;

    private NbdTestClient(Socket socket) => _socket = socket;

    public ushort HandshakeFlags { get; private set; }

    /// <summary>Connects and reads the 18-byte greeting.</summary>
    public static async Task<NbdTestClient> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        var client = new NbdTestClient(socket);
        var greeting = await client.ReadExactAsync(18);
        Assert.Equal(0x4e42444d41474943UL, BinaryPrimitives.ReadUInt64BigEndian(greeting));
        Assert.Equal(IHaveOpt, BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)));
        client.HandshakeFlags = BinaryPrimitives.ReadUInt16BigEndian(greeting.AsSpan(16));
        return client;
    }

    /// <summary>Connects, sends client flags (FIXED_NEWSTYLE | NO_ZEROES by default), optionally structured replies and meta context, then GO.</summary>
    public static async Task<(NbdTestClient Client, ulong Size, ushort Flags)> OpenAsync(int port, string export = "", bool structured = false, bool meta = false)
    {
        var client = await ConnectAsync(port);
        await client.SendClientFlagsAsync(3);
        if (structured)
        {
            await client.SendOptionAsync(OptStructuredReply, []);
            Assert.Equal(RepAck, (await client.ReadOptionReplyAsync()).Type);
        }
        if (meta)
        {
            await client.SendOptionAsync(OptSetMetaContext, MetaContextData(export, "base:allocation"));
            var reply = await client.ReadOptionReplyAsync();
            Assert.Equal(RepMetaContext, reply.Type);
            Assert.Equal(RepAck, (await client.ReadOptionReplyAsync()).Type);
        }
        var (size, flags) = await client.GoAsync(export);
        return (client, size, flags);
    }

    public Task SendClientFlagsAsync(uint flags)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        return SendAsync(b);
    }

    public Task SendOptionAsync(uint option, byte[] data, ulong magic = IHaveOpt)
    {
        var b = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, magic);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), (uint)data.Length);
        data.CopyTo(b, 16);
        return SendAsync(b);
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync()
    {
        var h = await ReadExactAsync(20);
        Assert.Equal(OptionReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(h));
        uint option = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8));
        uint type = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        return (option, type, await ReadExactAsync((int)length));
    }

    public static byte[] InfoData(string name, params ushort[] infos)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var b = new byte[4 + nameBytes.Length + 2 + 2 * infos.Length];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)nameBytes.Length);
        nameBytes.CopyTo(b, 4);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + nameBytes.Length), (ushort)infos.Length);
        for (int i = 0; i < infos.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6 + nameBytes.Length + 2 * i), infos[i]);
        }
        return b;
    }

    public static byte[] MetaContextData(string export, params string[] queries)
    {
        var ms = new MemoryStream();
        void U32(uint v)
        {
            var t = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(t, v);
            ms.Write(t);
        }
        var name = Encoding.UTF8.GetBytes(export);
        U32((uint)name.Length);
        ms.Write(name);
        U32((uint)queries.Length);
        foreach (var q in queries)
        {
            var qb = Encoding.UTF8.GetBytes(q);
            U32((uint)qb.Length);
            ms.Write(qb);
        }
        return ms.ToArray();
    }

    /// <summary>Sends NBD_OPT_GO and reads replies up to the ACK; returns size and transmission flags from NBD_INFO_EXPORT.</summary>
    public async Task<(ulong Size, ushort Flags)> GoAsync(string export)
    {
        await SendOptionAsync(OptGo, InfoData(export));
        ulong size = 0;
        ushort flags = 0;
        while (true)
        {
            var (option, type, data) = await ReadOptionReplyAsync();
            Assert.Equal(OptGo, option);
            if (type == RepAck)
            {
                return (size, flags);
            }
            Assert.Equal(RepInfo, type);
            if (BinaryPrimitives.ReadUInt16BigEndian(data) == 0)
            {
                Assert.Equal(12, data.Length);
                size = BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(2));
                flags = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(10));
            }
        }
    }

    public static byte[] Request(ushort flags, ushort type, ulong cookie, ulong offset, uint length, byte[]? payload = null, uint magic = RequestMagic)
    {
        var b = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), length);
        payload?.CopyTo(b, 28);
        return b;
    }

    public Task SendRequestAsync(ushort flags, ushort type, ulong cookie, ulong offset, uint length, byte[]? payload = null) =>
        SendAsync(Request(flags, type, cookie, offset, length, payload));

    /// <summary>One reply message: a simple reply (with data only for successful reads of a known length) or one structured chunk.</summary>
    public sealed record Reply(bool Structured, ulong Cookie, uint Error, ushort ChunkFlags, ushort ChunkType, byte[] Payload);

    public async Task<Reply> ReadReplyAsync(int readLength = 0)
    {
        var magic = await ReadExactAsync(4);
        uint m = BinaryPrimitives.ReadUInt32BigEndian(magic);
        if (m == SimpleReplyMagic)
        {
            var rest = await ReadExactAsync(12);
            uint error = BinaryPrimitives.ReadUInt32BigEndian(rest);
            ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4));
            var data = error == 0 && readLength > 0 ? await ReadExactAsync(readLength) : [];
            return new Reply(false, cookie, error, 0, 0, data);
        }
        Assert.Equal(StructuredReplyMagic, m);
        var h = await ReadExactAsync(16);
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(h);
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(2));
        ulong c = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12));
        var payload = await ReadExactAsync((int)length);
        uint err = (type & 0x8000) != 0 ? BinaryPrimitives.ReadUInt32BigEndian(payload) : 0;
        return new Reply(true, c, err, flags, type, payload);
    }

    /// <summary>Simple-reply read of <paramref name="length"/> bytes; asserts success.</summary>
    public async Task<byte[]> ReadAsync(ulong offset, int length, ulong cookie = 7)
    {
        await SendRequestAsync(0, CmdRead, cookie, offset, (uint)length);
        var reply = await ReadReplyAsync(length);
        Assert.Equal(cookie, reply.Cookie);
        Assert.Equal(0u, reply.Error);
        return reply.Payload;
    }

    public async Task<uint> CommandAsync(ushort type, ulong offset, uint length, ushort flags = 0, byte[]? payload = null, ulong cookie = 9)
    {
        await SendRequestAsync(flags, type, cookie, offset, length, payload);
        var reply = await ReadReplyAsync();
        Assert.Equal(cookie, reply.Cookie);
        Assert.False(reply.Structured && (reply.ChunkType & 0x8000) == 0, "non-read commands expect a simple reply or an error chunk");
        return reply.Error;
    }

    public async Task SendAsync(byte[] data)
    {
        using var cts = new CancellationTokenSource(Timeout);
        await _socket.SendAsync(data, SocketFlags.None, cts.Token);
    }

    public async Task<byte[]> ReadExactAsync(int count)
    {
        var b = new byte[count];
        int done = 0;
        using var cts = new CancellationTokenSource(Timeout);
        while (done < count)
        {
            int n = await _socket.ReceiveAsync(b.AsMemory(done), SocketFlags.None, cts.Token);
            if (n == 0)
            {
                throw new EndOfStreamException($"server closed the connection after {done} of {count} bytes");
            }
            done += n;
        }
        return b;
    }

    /// <summary>True when the server closes the connection (EOF or reset) within the timeout, ignoring <paramref name="drainBytesAllowed"/> bytes first.</summary>
    public async Task<bool> IsClosedByServerAsync(int drainBytesAllowed = 0)
    {
        var b = new byte[4096];
        using var cts = new CancellationTokenSource(Timeout);
        int seen = 0;
        try
        {
            while (true)
            {
                int n = await _socket.ReceiveAsync(b, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    return true;
                }
                seen += n;
                if (seen > drainBytesAllowed)
                {
                    return false;
                }
            }
        }
        catch (SocketException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public void Close() => _socket.Close();

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}

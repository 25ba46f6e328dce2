using System.Buffers.Binary;
using System.Net.Sockets;

namespace Cairn.Integration.Tests.Support;

/// <summary>
/// A deliberately small, synchronous NBD client (fixed newstyle, OPT_GO, simple replies) used where a test must know
/// exactly which writes and flushes the server acknowledged — something fio cannot report.
/// </summary>
internal sealed class MiniNbdClient : IDisposable
{
    private const ulong NbdMagic = 0x4e42444d41474943; // "NBDMAGIC"
    private const ulong OptMagic = 0x49484156454F5054; // "IHAVEOPT"
    private const ulong OptReplyMagic = 0x3e889045565a9;
    private const uint RequestMagic = 0x25609513;
    private const uint SimpleReplyMagic = 0x67446698;
    private readonly TcpClient _tcp;
    private readonly NetworkStream _stream;
    private ulong _cookie;

    private MiniNbdClient(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
    }

    public long SizeBytes { get; private set; }

    public static Task<MiniNbdClient> ConnectAsync(int port, string export) => ConnectAsync("127.0.0.1", port, export);

    /// <summary>Connects to any host; with <paramref name="ioTimeout"/> a request that gets no reply in time throws instead of hanging.</summary>
    public static async Task<MiniNbdClient> ConnectAsync(string host, int port, string export, TimeSpan? ioTimeout = null)
    {
        var tcp = new TcpClient { NoDelay = true };
        if (ioTimeout is { } timeout)
        {
            tcp.ReceiveTimeout = tcp.SendTimeout = (int)timeout.TotalMilliseconds;
        }
        using var connect = new CancellationTokenSource(ioTimeout ?? TimeSpan.FromSeconds(60));
        await tcp.ConnectAsync(host, port, connect.Token);
        var client = new MiniNbdClient(tcp);
        client.Handshake(export);
        return client;
    }

    private void Handshake(string export)
    {
        Span<byte> hello = stackalloc byte[18];
        _stream.ReadExactly(hello);
        Expect(BinaryPrimitives.ReadUInt64BigEndian(hello) == NbdMagic, "bad NBDMAGIC");
        Expect(BinaryPrimitives.ReadUInt64BigEndian(hello[8..]) == OptMagic, "server is not fixed newstyle");
        WriteU32(3); // FIXED_NEWSTYLE | NO_ZEROES

        var name = System.Text.Encoding.UTF8.GetBytes(export);
        var opt = new byte[16 + 4 + name.Length + 2];
        BinaryPrimitives.WriteUInt64BigEndian(opt, OptMagic);
        BinaryPrimitives.WriteUInt32BigEndian(opt.AsSpan(8), 7); // NBD_OPT_GO
        BinaryPrimitives.WriteUInt32BigEndian(opt.AsSpan(12), (uint)(4 + name.Length + 2));
        BinaryPrimitives.WriteUInt32BigEndian(opt.AsSpan(16), (uint)name.Length);
        name.CopyTo(opt, 20);
        _stream.Write(opt);

        Span<byte> head = stackalloc byte[20];
        while (true)
        {
            _stream.ReadExactly(head);
            Expect(BinaryPrimitives.ReadUInt64BigEndian(head) == OptReplyMagic, "bad option reply magic");
            var type = BinaryPrimitives.ReadUInt32BigEndian(head[12..]);
            var data = new byte[BinaryPrimitives.ReadUInt32BigEndian(head[16..])];
            _stream.ReadExactly(data);
            if (type == 1)
            {
                return; // NBD_REP_ACK: transmission phase
            }
            Expect((type & 0x80000000) == 0, $"OPT_GO refused ({type:x}): {System.Text.Encoding.UTF8.GetString(data)}");
            if (type == 3 && BinaryPrimitives.ReadUInt16BigEndian(data) == 0)
            {
                SizeBytes = (long)BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(2));
            }
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> data, bool fua = false)
    {
        SendRequest(1, fua ? (ushort)1 : (ushort)0, offset, (uint)data.Length);
        _stream.Write(data);
        ReadReply(Span<byte>.Empty);
    }

    public void Read(long offset, Span<byte> destination)
    {
        SendRequest(0, 0, offset, (uint)destination.Length);
        ReadReply(destination);
    }

    public void Flush()
    {
        SendRequest(3, 0, 0, 0);
        ReadReply(Span<byte>.Empty);
    }

    private void SendRequest(ushort type, ushort flags, long offset, uint length)
    {
        Span<byte> req = stackalloc byte[28];
        BinaryPrimitives.WriteUInt32BigEndian(req, RequestMagic);
        BinaryPrimitives.WriteUInt16BigEndian(req[4..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(req[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(req[8..], ++_cookie);
        BinaryPrimitives.WriteUInt64BigEndian(req[16..], (ulong)offset);
        BinaryPrimitives.WriteUInt32BigEndian(req[24..], length);
        _stream.Write(req);
    }

    private void ReadReply(Span<byte> payload)
    {
        Span<byte> reply = stackalloc byte[16];
        _stream.ReadExactly(reply);
        Expect(BinaryPrimitives.ReadUInt32BigEndian(reply) == SimpleReplyMagic, "bad reply magic");
        Expect(BinaryPrimitives.ReadUInt64BigEndian(reply[8..]) == _cookie, "reply for another request");
        var error = BinaryPrimitives.ReadUInt32BigEndian(reply[4..]);
        if (error != 0)
        {
            throw new IOException($"NBD error {error}");
        }
        _stream.ReadExactly(payload);
    }

    private void WriteU32(uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        _stream.Write(b);
    }

    private static void Expect(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidDataException(message);
        }
    }

    public void Dispose()
    {
        _stream.Dispose();
        _tcp.Dispose();
    }
}

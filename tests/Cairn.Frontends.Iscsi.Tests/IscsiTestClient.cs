using System.Net;
using System.Net.Sockets;
using System.Text;
using Cairn.Frontends.Iscsi.Login;
using Cairn.Frontends.Iscsi.Pdus;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>A received PDU: the BHS and the unpadded data segment.</summary>
public sealed record TestPdu(byte[] Bhs, byte[] Data)
{
    internal Opcode Opcode => Pdus.Bhs.GetOpcode(Bhs);
    public uint Itt => Pdus.Bhs.InitiatorTaskTag(Bhs);
    public uint U32(int offset) => Pdus.Bhs.U32(Bhs, offset);
    public string Text => Encoding.UTF8.GetString(Data);
}

/// <summary>
/// A deliberately small iSCSI initiator for protocol tests: builds PDUs by hand so tests can send what real initiators
/// never would (unknown opcodes, CmdSN outside the window, corrupt digests) and see every PDU the target returns.
/// </summary>
public sealed class IscsiTestClient : IAsyncDisposable
{
    private static readonly TimeSpan ReceiveTimeout = TimeSpan.FromSeconds(10);
    private readonly Socket _socket;

    private IscsiTestClient(Socket socket) => _socket = socket;

    public bool HeaderDigest { get; set; }
    public bool DataDigest { get; set; }
    public uint CmdSn { get; set; } = 1;
    public uint NextItt { get; set; } = 1;

    public static async Task<IscsiTestClient> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return new IscsiTestClient(socket);
    }

    /// <summary>Sends one login request with the given keys ('|' separates pairs) and returns the response.</summary>
    internal async Task<TestPdu> LoginAsync(string keys, LoginStage current = LoginStage.Operational, LoginStage next = LoginStage.FullFeature,
        ulong isid = 0x0023_3D00_0001)
    {
        var bhs = new byte[Bhs.Length];
        new LoginRequest(true, false, current, next, 0, 0, isid, 0, NextItt++, 0, CmdSn, 0).WriteTo(bhs);
        await SendAsync(bhs, Encoding.UTF8.GetBytes(keys.Replace('|', '\0') + "\0"));
        return await ReceiveAsync();
    }

    /// <summary>Logs in to a normal session and turns on the digests it asked for.</summary>
    public async Task<TestPdu> LoginNormalAsync(string target, string extraKeys = "", ulong isid = 0x0023_3D00_0001)
    {
        var response = await LoginAsync($"InitiatorName=iqn.2026-11.test:client|TargetName={target}|SessionType=Normal{extraKeys}", isid: isid);
        Assert.Equal(Opcode.LoginResponse, response.Opcode);
        Assert.Equal(0, response.Bhs[36] << 8 | response.Bhs[37]);
        var answers = TextKeys.Parse(response.Data)!.ToDictionary();
        HeaderDigest = answers.GetValueOrDefault("HeaderDigest") == "CRC32C";
        DataDigest = answers.GetValueOrDefault("DataDigest") == "CRC32C";
        return response;
    }

    internal static byte[] ScsiCommand(uint itt, uint cmdSn, uint expectedBytes, bool read, bool write, ReadOnlySpan<byte> cdb, bool final = true)
    {
        var bhs = new byte[Bhs.Length];
        bhs[0] = (byte)Opcode.ScsiCommand;
        bhs[1] = (byte)((final ? 0x80 : 0) | (read ? 0x40 : 0) | (write ? 0x20 : 0) | 0x01);
        Bhs.Put(bhs, 16, itt);
        Bhs.Put(bhs, 20, expectedBytes);
        Bhs.Put(bhs, 24, cmdSn);
        cdb.CopyTo(bhs.AsSpan(32));
        return bhs;
    }

    internal static byte[] DataOut(uint itt, uint ttt, uint dataSn, uint offset, bool final)
    {
        var bhs = new byte[Bhs.Length];
        bhs[0] = (byte)Opcode.DataOut;
        bhs[1] = final ? (byte)0x80 : (byte)0;
        Bhs.Put(bhs, 16, itt);
        Bhs.Put(bhs, 20, ttt);
        Bhs.Put(bhs, 36, dataSn);
        Bhs.Put(bhs, 40, offset);
        return bhs;
    }

    internal static byte[] NopOut(uint itt, uint cmdSn)
    {
        var bhs = new byte[Bhs.Length];
        bhs[0] = Bhs.ImmediateBit | (byte)Opcode.NopOut;
        bhs[1] = 0x80;
        Bhs.Put(bhs, 16, itt);
        Bhs.Put(bhs, 20, Bhs.ReservedTag);
        Bhs.Put(bhs, 24, cmdSn);
        return bhs;
    }

    public async Task SendAsync(byte[] bhs, ReadOnlyMemory<byte> data = default, bool corruptHeaderDigest = false)
    {
        var frame = new byte[PduCodec.FrameBytes(0, data.Length, HeaderDigest, DataDigest)];
        bhs.CopyTo(frame, 0);
        int length = PduCodec.Encode(frame, data.Span, HeaderDigest, DataDigest);
        if (corruptHeaderDigest)
        {
            frame[Bhs.Length] ^= 0xFF;
        }
        await _socket.SendAsync(frame.AsMemory(0, length));
    }

    public async Task<TestPdu> ReceiveAsync()
    {
        var bhs = new byte[Bhs.Length];
        if (!await ReceiveExactAsync(bhs))
        {
            throw new Xunit.Sdk.XunitException("the target closed the connection instead of answering");
        }
        var frame = new byte[Bhs.Length + PduCodec.BytesAfterBhs(bhs, HeaderDigest, DataDigest)];
        bhs.CopyTo(frame, 0);
        Assert.True(await ReceiveExactAsync(frame.AsMemory(Bhs.Length)), "the target closed the connection in the middle of a PDU");
        Assert.Equal(FrameError.None, PduCodec.Decode(frame, HeaderDigest, DataDigest, out _, out int dataStart, out int dataBytes));
        return new TestPdu(bhs, frame.AsSpan(dataStart, dataBytes).ToArray());
    }

    /// <summary>True when the target closes the connection (within the receive timeout) without sending anything more.</summary>
    public async Task<bool> ClosedByTargetAsync()
    {
        var one = new byte[1];
        try
        {
            return !await ReceiveExactAsync(one);
        }
        catch (SocketException)
        {
            return true;
        }
    }

    private async Task<bool> ReceiveExactAsync(Memory<byte> buffer)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(ReceiveTimeout);
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await _socket.ReceiveAsync(buffer[done..], SocketFlags.None, timeout.Token);
            if (n == 0)
            {
                return false;
            }
            done += n;
        }
        return true;
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}

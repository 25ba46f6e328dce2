using System.Buffers;
using System.Net.Sockets;
using Cairn.Core;
using Cairn.Frontends.Iscsi.Login;
using Cairn.Frontends.Iscsi.Pdus;
using Cairn.Frontends.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Iscsi;

/// <summary>
/// One TCP connection, which is one whole session here (MaxConnections=1): login, then the full-feature phase.
/// One receive loop reads a PDU, handles it to the end (commands run inline, in CmdSN order) and reads the next;
/// only that loop sends, so the send buffer needs no lock. Split by concern: Login, FullFeature, Scsi.
/// </summary>
internal sealed partial class IscsiConnection : IFrontendConnection
{
    private static readonly TimeSpan LoginTimeout = TimeSpan.FromSeconds(60);
    /// <summary>Largest data segment we ever send, whatever the initiator accepts: bounds the send buffer.</summary>
    private const int MaxSendSegmentBytes = 262144;
    private const int RecvBufferBytes = Bhs.Length + Bhs.MaxAhsBytes + Bhs.DigestBytes + TargetLimits.MaxRecvDataSegmentLength + 3 + Bhs.DigestBytes;
    private const int SendBufferBytes = Bhs.Length + Bhs.DigestBytes + MaxSendSegmentBytes + Bhs.DigestBytes;

    private readonly IscsiServer _server;
    private readonly Socket _socket;
    private readonly ILogger _logger;
    private readonly LoginNegotiator _negotiator = new();
    private byte[] _recv;
    private byte[] _send;
    private int _headerBytes;
    private int _dataStart;
    private int _dataBytes;
    private bool _headerDigest;
    private bool _dataDigest;
    private int _aborted;
    private ExportSession? _session;
    private ScsiLogicalUnit? _unit;

    public IscsiConnection(IscsiServer server, Socket socket)
    {
        _server = server;
        _socket = socket;
        _logger = server.Logger;
        ClientDescription = $"iscsi {socket.RemoteEndPoint}";
        _recv = ArrayPool<byte>.Shared.Rent(RecvBufferBytes);
        _send = ArrayPool<byte>.Shared.Rent(SendBufferBytes);
    }

    public string ClientDescription { get; private set; }

    private SessionParameters Parameters => _negotiator.Parameters;

    /// <summary>The BHS and AHS of the PDU just received.</summary>
    private ReadOnlySpan<byte> Header => _recv.AsSpan(0, _headerBytes);

    /// <summary>The (unpadded) data segment of the PDU just received; valid until the next receive.</summary>
    private Memory<byte> Data => _recv.AsMemory(_dataStart, _dataBytes);

    /// <summary>Largest data segment the initiator accepts from us.</summary>
    private int SendSegmentBytes => Math.Min(Parameters.InitiatorMaxRecvDataSegmentLength, MaxSendSegmentBytes);

    public async Task RunAsync()
    {
        CancellationTokenRegistration revoked = default;
        try
        {
            _socket.NoDelay = true;
            bool loggedIn;
            using (var timeout = new CancellationTokenSource(LoginTimeout))
            using (timeout.Token.Register(static s => ((IscsiConnection)s!).Abort("login not finished within 60 s"), this))
            {
                loggedIn = await LoginPhaseAsync();
            }
            if (!loggedIn)
            {
                return;
            }
            if (_session is not null)
            {
                revoked = _session.Revoked.Register(static s => ((IscsiConnection)s!).Abort("export revoked"), this);
            }
            await FullFeaturePhaseAsync();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or OperationCanceledException)
        {
            // The initiator went away or we aborted the connection: nothing to answer, just clean up.
            _logger.LogDebug("iSCSI {Client} closed: {Reason}", ClientDescription, e.Message);
        }
        finally
        {
            await revoked.DisposeAsync();
            CloseSocket();
            ReleasePendingWrites();
            _unit?.EndNexus(); // one connection per session: the I_T nexus ends with it
            _session?.Dispose();
            ArrayPool<byte>.Shared.Return(_recv);
            ArrayPool<byte>.Shared.Return(_send);
            _recv = _send = [];
        }
    }

    /// <summary>Drops the connection from any thread: pending receives and sends fail and the loop cleans up.</summary>
    public void Abort(string reason)
    {
        if (Interlocked.Exchange(ref _aborted, 1) == 0)
        {
            _logger.LogInformation("iSCSI {Client} dropped: {Reason}", ClientDescription, reason);
            CloseSocket();
        }
    }

    private void CloseSocket()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception)
        {
            // Already closed or never connected fully.
        }
        _socket.Dispose();
    }

    /// <summary>
    /// Reads one whole PDU into the receive buffer; false when the initiator closed the connection or sent a PDU we
    /// cannot frame (too large, bad header digest) or trust (bad data digest): at ErrorRecoveryLevel 0 the only
    /// recovery is a new connection.
    /// </summary>
    private async ValueTask<bool> ReceivePduAsync()
    {
        if (!await ReceiveExactAsync(_recv.AsMemory(0, Bhs.Length)))
        {
            return false;
        }
        int dataLength = Bhs.DataSegmentLength(_recv);
        if (dataLength > TargetLimits.MaxRecvDataSegmentLength)
        {
            _logger.LogWarning("iSCSI {Client} sent a {Bytes}-byte data segment, above the {Max} bytes we declared; dropping it",
                ClientDescription, dataLength, TargetLimits.MaxRecvDataSegmentLength);
            return false;
        }
        int rest = PduCodec.BytesAfterBhs(_recv, _headerDigest, _dataDigest);
        if (!await ReceiveExactAsync(_recv.AsMemory(Bhs.Length, rest)))
        {
            return false;
        }
        var error = PduCodec.Decode(_recv.AsSpan(0, Bhs.Length + rest), _headerDigest, _dataDigest, out _headerBytes, out _dataStart, out _dataBytes);
        if (error != FrameError.None)
        {
            _logger.LogWarning("iSCSI {Client}: {Error} mismatch on a {Opcode} PDU; closing the connection (ErrorRecoveryLevel 0)",
                ClientDescription, error, Bhs.GetOpcode(_recv));
            return false;
        }
        return true;
    }

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes; false when the peer closed first.</summary>
    private async ValueTask<bool> ReceiveExactAsync(Memory<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await _socket.ReceiveAsync(buffer[done..], SocketFlags.None);
            if (n == 0)
            {
                return false;
            }
            done += n;
        }
        return true;
    }

    /// <summary>
    /// Sends the PDU whose BHS the caller wrote at the start of the send buffer, with <paramref name="data"/> as its data
    /// segment. Stamps StatSN (advancing it for PDUs that carry status), ExpCmdSN and MaxCmdSN.
    /// </summary>
    private ValueTask SendAsync(ReadOnlySpan<byte> data, StatSn statSn)
    {
        StampSequenceNumbers(_send, statSn);
        int length = PduCodec.Encode(_send, data, _headerDigest, _dataDigest);
        return SendAllAsync(_send.AsMemory(0, length));
    }

    private async ValueTask SendAllAsync(ReadOnlyMemory<byte> data)
    {
        while (!data.IsEmpty)
        {
            int n = await _socket.SendAsync(data, SocketFlags.None);
            data = data[n..];
        }
    }
}

using System.Buffers;
using Cairn.Core;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Nbd;

/// <summary>
/// The receive loop: read as many bytes as the socket has, parse every complete request in place, execute it,
/// append replies to a batch, and send the batch with one send once the buffered requests run out.
/// </summary>
internal sealed partial class NbdConnection
{
    /// <summary>Room always kept free in the send batch for one non-read reply (block status with its extents is the largest).</summary>
    private const int SmallReplyReserveBytes = 2048;
    /// <summary>Compact the receive buffer once less than this is free at its end.</summary>
    private const int ReceiveTailMinBytes = 64 * 1024;

    private IBlockDevice _device = null!;
    private int _recvStart;
    private int _recvEnd;
    private int _sendPos;

    private async Task TransmissionAsync()
    {
        _recvStart = _recvEnd = _sendPos = 0;
        int maxRequestBytes = _server.Options.MaxRequestBytes;
        while (true)
        {
            while (_recvEnd - _recvStart >= NbdProtocol.RequestHeaderBytes)
            {
                if (!NbdRequest.TryParse(_recv.AsSpan(_recvStart, NbdProtocol.RequestHeaderBytes), out var request))
                {
                    await FlushSendAsync();
                    _logger.LogWarning("NBD {Client} sent a request with bad magic; the stream cannot be trusted, closing", ClientDescription);
                    return;
                }
                if (_send.Length - _sendPos < SmallReplyReserveBytes)
                {
                    await FlushSendAsync();
                }
                if (request.IsWrite)
                {
                    if (request.Length > (uint)maxRequestBytes)
                    {
                        // We could read and discard the payload, but a client that ignores the advertised maximum
                        // may send anything; closing protects the daemon and is what the spec allows (MAY disconnect).
                        await FlushSendAsync();
                        _logger.LogWarning("NBD {Client} sent a {Length}-byte write, above the {Max}-byte maximum it was told; closing", ClientDescription, request.Length, maxRequestBytes);
                        return;
                    }
                    int total = NbdProtocol.RequestHeaderBytes + (int)request.Length;
                    if (_recvEnd - _recvStart < total)
                    {
                        if (total <= _recv.Length)
                        {
                            break; // wait for the rest of the payload
                        }
                        if (!await ReceiveLargeWriteAsync(request))
                        {
                            return;
                        }
                        continue;
                    }
                    var payload = _recv.AsMemory(_recvStart + NbdProtocol.RequestHeaderBytes, (int)request.Length);
                    _recvStart += total;
                    await ExecuteWriteAsync(request, payload, owned: null);
                    continue;
                }
                _recvStart += NbdProtocol.RequestHeaderBytes;
                if (request.Command == (ushort)NbdCommand.Disconnect)
                {
                    await FlushSendAsync();
                    _logger.LogDebug("NBD {Client} disconnected cleanly", ClientDescription);
                    return;
                }
                await ExecuteAsync(request);
            }

            await FlushSendAsync();
            CompactReceiveBuffer();
            int n = await _transport.ReceiveAsync(_recv.AsMemory(_recvEnd));
            if (n == 0)
            {
                if (_recvEnd != _recvStart)
                {
                    _logger.LogInformation("NBD {Client} closed mid-request ({Bytes} bytes of a request unread)", ClientDescription, _recvEnd - _recvStart);
                }
                return;
            }
            _recvEnd += n;
        }
    }

    private void CompactReceiveBuffer()
    {
        if (_recvStart == _recvEnd)
        {
            _recvStart = _recvEnd = 0;
        }
        else if (_recvStart > 0 && _recv.Length - _recvEnd < ReceiveTailMinBytes)
        {
            // Only a partial request remains (at most one write payload); moving it keeps the buffer contiguous.
            _recv.AsSpan(_recvStart, _recvEnd - _recvStart).CopyTo(_recv);
            _recvEnd -= _recvStart;
            _recvStart = 0;
        }
    }

    /// <summary>A write larger than the receive buffer: its payload goes straight into a pooled buffer of its own size.</summary>
    private async ValueTask<bool> ReceiveLargeWriteAsync(NbdRequest request)
    {
        int length = (int)request.Length;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(length);
        int have = _recvEnd - _recvStart - NbdProtocol.RequestHeaderBytes;
        _recv.AsSpan(_recvStart + NbdProtocol.RequestHeaderBytes, have).CopyTo(buffer);
        _recvStart = _recvEnd = 0;
        bool complete;
        try
        {
            await FlushSendAsync(); // earlier replies should not wait behind a 32 MiB upload
            complete = await ReceiveExactAsync(buffer.AsMemory(have, length - have));
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
        if (!complete)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            _logger.LogInformation("NBD {Client} closed in the middle of a {Length}-byte write", ClientDescription, length);
            return false;
        }
        await ExecuteWriteAsync(request, buffer.AsMemory(0, length), owned: buffer);
        return true;
    }

    /// <summary>Sends the batched replies, if any, as one send.</summary>
    private ValueTask FlushSendAsync()
    {
        if (_sendPos == 0)
        {
            return ValueTask.CompletedTask;
        }
        int count = _sendPos;
        _sendPos = 0;
        return SendLockedAsync(_send.AsMemory(0, count));
    }

    private void AppendSimpleReply(ulong cookie, uint errno) =>
        _sendPos += NbdReplyWriter.Simple(_send.AsSpan(_sendPos), cookie, errno);

    private void AppendError(in NbdRequest request, uint errno) =>
        _sendPos += NbdReplyWriter.Error(_send.AsSpan(_sendPos), IsStructuredRead(request), request.Cookie, errno);

    private bool IsStructuredRead(in NbdRequest request) => _structured && request.Command == (ushort)NbdCommand.Read;
}

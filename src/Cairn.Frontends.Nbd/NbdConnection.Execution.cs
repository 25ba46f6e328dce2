using System.Buffers;
using System.Buffers.Binary;
using Cairn.Core;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Nbd;

/// <summary>
/// Running requests against the device. Two modes:
/// <list type="bullet">
/// <item>inline (the start, and the local block store's steady state): the device gets the receive buffer's payload
/// or the send batch's space directly, zero copies; a ValueTask that does not complete synchronously is awaited
/// right there once, and the connection switches to detached mode;</item>
/// <item>detached: each request owns pooled buffers, so requests that go asynchronous complete out of order in the
/// background (bounded by <see cref="_slots"/>) and send their own replies under the send lock. After a long run of
/// synchronous completions the connection returns to inline mode.</item>
/// </list>
/// Read replies are only ever written once the data is in hand, so a failed read never follows a sent header.
/// </summary>
internal sealed partial class NbdConnection
{
    private const int SynchronousStreakToInline = 1024;
    private const int MaxExtentsPerReply = 128;

    private bool _detached;
    private int _syncStreak;

    private ValueTask ExecuteAsync(in NbdRequest request)
    {
        uint errno = Validate(request);
        if (errno != NbdErrno.None)
        {
            LogRejected(request, errno);
            AppendError(request, errno);
            return ValueTask.CompletedTask;
        }
        return (NbdCommand)request.Command switch
        {
            NbdCommand.Read => ExecuteReadAsync(request),
            NbdCommand.BlockStatus => ExecuteBlockStatusAsync(request),
            _ => ExecuteNoDataAsync(request, ReadOnlyMemory<byte>.Empty, owned: null),
        };
    }

    private ValueTask ExecuteWriteAsync(in NbdRequest request, ReadOnlyMemory<byte> payload, byte[]? owned)
    {
        uint errno = Validate(request);
        if (errno != NbdErrno.None)
        {
            if (owned is not null)
            {
                ArrayPool<byte>.Shared.Return(owned);
            }
            LogRejected(request, errno);
            AppendError(request, errno);
            return ValueTask.CompletedTask;
        }
        return ExecuteNoDataAsync(request, payload, owned);
    }

    /// <summary>Checks a request against the negotiated state and the export; returns the errno to reply, or 0.</summary>
    private uint Validate(in NbdRequest request)
    {
        var allowed = CommandFlags.Fua; // valid on every command once SEND_FUA is advertised
        switch ((NbdCommand)request.Command)
        {
            case NbdCommand.Read:
                allowed |= _structured ? CommandFlags.DontFragment : 0;
                break;
            case NbdCommand.WriteZeroes:
                allowed |= CommandFlags.NoHole | CommandFlags.FastZero;
                break;
            case NbdCommand.BlockStatus:
                allowed |= CommandFlags.RequestOne;
                break;
            case NbdCommand.Write or NbdCommand.Flush or NbdCommand.Trim or NbdCommand.Cache:
                break;
            default:
                return NbdErrno.Invalid; // unknown command: no payload is assumed, the stream stays in sync
        }
        if ((request.Flags & ~allowed) != 0)
        {
            return NbdErrno.Invalid;
        }
        var command = (NbdCommand)request.Command;
        if (command == NbdCommand.Flush)
        {
            return request.Offset == 0 && request.Length == 0 ? NbdErrno.None : NbdErrno.Invalid;
        }
        bool modifies = command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes;
        if (modifies && _readOnly)
        {
            return NbdErrno.Perm;
        }
        if (command == NbdCommand.BlockStatus && _baseAllocationId == 0)
        {
            return NbdErrno.Invalid; // base:allocation was not negotiated (which needs structured replies)
        }
        if (request.Length == 0 || (command == NbdCommand.Read && request.Length > (uint)_server.Options.MaxRequestBytes))
        {
            return NbdErrno.Invalid;
        }
        ulong size = (ulong)_device.SizeBytes;
        if (request.Offset > size || request.Length > size - request.Offset)
        {
            // The spec: ENOSPC for writes past the end, EINVAL for reads, trims and block status.
            return command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdErrno.NoSpace : NbdErrno.Invalid;
        }
        return NbdErrno.None;
    }

    private async ValueTask ExecuteReadAsync(NbdRequest request)
    {
        int length = (int)request.Length;
        int headerBytes = NbdReplyWriter.ReadHeaderBytes(_structured);
        if (!_detached && headerBytes + length <= _send.Length)
        {
            if (_send.Length - _sendPos < headerBytes + length)
            {
                await FlushSendAsync();
            }
            uint errno = NbdErrno.None;
            try
            {
                var pending = _device.ReadAsync((long)request.Offset, _send.AsMemory(_sendPos + headerBytes, length));
                if (!pending.IsCompleted)
                {
                    SwitchToDetached();
                }
                await pending;
            }
            catch (Exception e)
            {
                errno = Fail(request, e);
            }
            if (errno == NbdErrno.None)
            {
                _sendPos += NbdReplyWriter.ReadHeader(_send.AsSpan(_sendPos), _structured, request.Cookie, request.Offset, length) + length;
            }
            else
            {
                AppendError(request, errno);
            }
            return;
        }
        await ExecuteReadDetachedAsync(request, headerBytes);
    }

    private async ValueTask ExecuteReadDetachedAsync(NbdRequest request, int headerBytes)
    {
        int length = (int)request.Length;
        await WaitForSlotAsync();
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Max(headerBytes + length, NbdProtocol.ErrorChunkBytes));
        var pending = StartRead(request, buffer.AsMemory(headerBytes, length));
        if (!pending.IsCompleted)
        {
            BeginBackground();
            _ = CompleteReadInBackgroundAsync(pending, request, buffer);
            return;
        }
        NoteSynchronousCompletion();
        int replyBytes = WriteReadReply(Consume(pending, request), request, buffer);
        if (replyBytes <= _send.Length - _sendPos)
        {
            buffer.AsSpan(0, replyBytes).CopyTo(_send.AsSpan(_sendPos));
            _sendPos += replyBytes;
            ArrayPool<byte>.Shared.Return(buffer);
            return;
        }
        await FlushSendAsync(); // earlier replies first, in the order they were batched
        BeginBackground(); // the queued reply holds a slot until it is sent
        await QueueReplyAsync(buffer, replyBytes);
    }

    private ValueTask StartRead(in NbdRequest request, Memory<byte> destination)
    {
        try
        {
            return _device.ReadAsync((long)request.Offset, destination);
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Writes the reply for a finished read (header before the data already in place, or an error) at the start of <paramref name="buffer"/>.</summary>
    private int WriteReadReply(uint errno, in NbdRequest request, byte[] buffer) =>
        errno == NbdErrno.None
            ? NbdReplyWriter.ReadHeader(buffer, _structured, request.Cookie, request.Offset, (int)request.Length) + (int)request.Length
            : NbdReplyWriter.Error(buffer, _structured, request.Cookie, errno);

    private async Task CompleteReadInBackgroundAsync(ValueTask pending, NbdRequest request, byte[] buffer)
    {
        // A ValueTask may be consumed only once: the await is its one consumption.
        uint errno = NbdErrno.None;
        try
        {
            await pending;
        }
        catch (Exception e)
        {
            errno = Fail(request, e);
        }
        await QueueReplyAsync(buffer, WriteReadReply(errno, request, buffer)); // the queue returns the buffer and the slot
    }

    /// <summary>WRITE, FLUSH, TRIM, WRITE_ZEROES and CACHE: replies carry no data.</summary>
    private async ValueTask ExecuteNoDataAsync(NbdRequest request, ReadOnlyMemory<byte> payload, byte[]? owned)
    {
        if (!_detached)
        {
            uint errno = NbdErrno.None;
            try
            {
                var pending = StartNoData(request, payload);
                if (!pending.IsCompleted)
                {
                    SwitchToDetached();
                }
                await pending;
            }
            catch (Exception e)
            {
                errno = Fail(request, e);
            }
            finally
            {
                if (owned is not null)
                {
                    ArrayPool<byte>.Shared.Return(owned);
                }
            }
            AppendSimpleReply(request.Cookie, errno);
            return;
        }
        await WaitForSlotAsync();
        if (owned is null && !payload.IsEmpty)
        {
            // The receive buffer is reused for the next requests; a request that may outlive this call needs its own copy.
            owned = ArrayPool<byte>.Shared.Rent(payload.Length);
            payload.CopyTo(owned);
            payload = owned.AsMemory(0, payload.Length);
        }
        var started = StartNoData(request, payload);
        if (!started.IsCompleted)
        {
            BeginBackground();
            _ = CompleteNoDataInBackgroundAsync(started, request, owned);
            return;
        }
        NoteSynchronousCompletion();
        uint result = Consume(started, request);
        if (owned is not null)
        {
            ArrayPool<byte>.Shared.Return(owned);
        }
        AppendSimpleReply(request.Cookie, result);
    }

    private ValueTask StartNoData(in NbdRequest request, ReadOnlyMemory<byte> payload)
    {
        var writeFlags = (request.Flags & CommandFlags.Fua) != 0 ? WriteFlags.ForceUnitAccess : WriteFlags.None;
        long offset = (long)request.Offset;
        try
        {
            switch ((NbdCommand)request.Command)
            {
                case NbdCommand.Write:
                    return _device.WriteAsync(offset, payload, writeFlags);
                case NbdCommand.Flush:
                    return _device.FlushAsync();
                case NbdCommand.Trim:
                    return _device.TrimAsync(offset, request.Length, writeFlags);
                case NbdCommand.WriteZeroes:
                    var zeroFlags = ((request.Flags & CommandFlags.NoHole) != 0 ? ZeroFlags.NoHole : ZeroFlags.None)
                        | ((request.Flags & CommandFlags.FastZero) != 0 ? ZeroFlags.FastOnly : ZeroFlags.None);
                    return _device.WriteZeroesAsync(offset, request.Length, zeroFlags, writeFlags);
                default:
                    // NBD_CMD_CACHE: the range was validated; the device has no cache to warm, so it is a successful hint.
                    return ValueTask.CompletedTask;
            }
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    private async Task CompleteNoDataInBackgroundAsync(ValueTask pending, NbdRequest request, byte[]? owned)
    {
        uint errno = NbdErrno.None;
        try
        {
            await pending;
        }
        catch (Exception e)
        {
            errno = Fail(request, e);
        }
        finally
        {
            if (owned is not null)
            {
                ArrayPool<byte>.Shared.Return(owned);
            }
        }
        byte[] reply = ArrayPool<byte>.Shared.Rent(NbdProtocol.SimpleReplyBytes);
        await QueueReplyAsync(reply, NbdReplyWriter.Simple(reply, request.Cookie, errno)); // the queue returns the buffer and the slot
    }

    /// <summary>Block status is rare next to reads and writes, so it is simply awaited in the receive loop.</summary>
    private async ValueTask ExecuteBlockStatusAsync(NbdRequest request)
    {
        int maxExtents = (request.Flags & CommandFlags.RequestOne) != 0 ? 1 : MaxExtentsPerReply;
        var extents = ArrayPool<AllocationExtent>.Shared.Rent(maxExtents);
        try
        {
            int count;
            try
            {
                count = await _device.GetAllocationAsync((long)request.Offset, request.Length, extents.AsMemory(0, maxExtents));
            }
            catch (Exception e)
            {
                AppendSimpleReply(request.Cookie, Fail(request, e));
                return;
            }
            int descriptors = WriteBlockStatusDescriptors(extents.AsSpan(0, Math.Min(count, maxExtents)), request.Length,
                _send.AsSpan(_sendPos + NbdProtocol.StructuredHeaderBytes + 4));
            if (descriptors == 0)
            {
                _logger.LogWarning("NBD {Client}: device returned no allocation extents for offset {Offset}", ClientDescription, request.Offset);
                AppendSimpleReply(request.Cookie, NbdErrno.Io);
                return;
            }
            var chunk = _send.AsSpan(_sendPos);
            uint payloadBytes = 4 + (uint)descriptors * 8;
            NbdReplyWriter.ChunkHeader(chunk, request.Cookie, ReplyChunkType.BlockStatus, payloadBytes);
            BinaryPrimitives.WriteUInt32BigEndian(chunk[NbdProtocol.StructuredHeaderBytes..], _baseAllocationId);
            _sendPos += NbdProtocol.StructuredHeaderBytes + (int)payloadBytes;
        }
        finally
        {
            ArrayPool<AllocationExtent>.Shared.Return(extents);
        }
    }

    /// <summary>Writes (length, flags) descriptors clipped so their sum never exceeds the request; returns how many.</summary>
    internal static int WriteBlockStatusDescriptors(ReadOnlySpan<AllocationExtent> extents, uint requestLength, Span<byte> destination)
    {
        long remaining = requestLength;
        int written = 0;
        foreach (var extent in extents)
        {
            if (remaining == 0)
            {
                break;
            }
            if (extent.LengthBytes <= 0)
            {
                continue;
            }
            long length = Math.Min(extent.LengthBytes, remaining);
            uint flags = extent.State switch
            {
                AllocationState.Hole => 3, // NBD_STATE_HOLE | NBD_STATE_ZERO: unallocated space reads as zeros
                AllocationState.Zero => 2, // NBD_STATE_ZERO
                _ => 0,
            };
            BinaryPrimitives.WriteUInt32BigEndian(destination[(written * 8)..], (uint)length);
            BinaryPrimitives.WriteUInt32BigEndian(destination[(written * 8 + 4)..], flags);
            remaining -= length;
            written++;
        }
        return written;
    }

    private ValueTask WaitForSlotAsync() => _slots.CurrentCount > 0 ? ValueTask.CompletedTask : WaitForSlotSlowAsync();

    private async ValueTask WaitForSlotSlowAsync()
    {
        // Send what we have before blocking: the replies the client waits on may be sitting in the batch.
        await FlushSendAsync();
        await _slots.WaitAsync();
        _slots.Release();
    }

    /// <summary>Takes the slot that <see cref="WaitForSlotAsync"/> saw free; only the receive loop takes slots, so it is still free.</summary>
    private void BeginBackground()
    {
        bool taken = _slots.Wait(0);
        System.Diagnostics.Debug.Assert(taken, "a slot was checked free before the request started");
        _syncStreak = 0;
    }

    private void SwitchToDetached()
    {
        _detached = true;
        _syncStreak = 0;
    }

    private void NoteSynchronousCompletion()
    {
        if (++_syncStreak >= SynchronousStreakToInline)
        {
            _detached = false;
        }
    }

    private uint Consume(ValueTask completed, in NbdRequest request)
    {
        try
        {
            completed.GetAwaiter().GetResult();
            return NbdErrno.None;
        }
        catch (Exception e)
        {
            return Fail(request, e);
        }
    }

    private uint Fail(in NbdRequest request, Exception e)
    {
        uint errno = NbdErrno.From(e);
        if (e is BlockDeviceException { Error: BlockError.NotSupported })
        {
            _logger.LogDebug("NBD {Client}: {Command} at {Offset} not supported by the device: {Message}", ClientDescription, (NbdCommand)request.Command, request.Offset, e.Message);
        }
        else
        {
            _logger.LogWarning(e is BlockDeviceException ? null : e, "NBD {Client}: {Command} of {Length} bytes at {Offset} failed with errno {Errno}: {Message}",
                ClientDescription, (NbdCommand)request.Command, request.Length, request.Offset, errno, e.Message);
        }
        return errno;
    }

    private void LogRejected(in NbdRequest request, uint errno) =>
        _logger.LogDebug("NBD {Client}: rejected command {Command} flags 0x{Flags:x} offset {Offset} length {Length} with errno {Errno}",
            ClientDescription, request.Command, (ushort)request.Flags, request.Offset, request.Length, errno);
}

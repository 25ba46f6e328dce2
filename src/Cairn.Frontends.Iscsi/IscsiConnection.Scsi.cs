using System.Buffers;
using System.Buffers.Binary;
using Cairn.Frontends.Iscsi.Pdus;
using Cairn.Frontends.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Iscsi;

/// <summary>
/// SCSI over iSCSI: commands, the write data flow (immediate data, unsolicited Data-Out, one R2T at a time) and
/// Data-In split by the initiator's MaxRecvDataSegmentLength, with status collapsed into the last Data-In.
/// </summary>
internal sealed partial class IscsiConnection
{
    /// <summary>A write waiting for its data. Its buffer is pooled and as long as the expected transfer length.</summary>
    private sealed class PendingWrite
    {
        public required ulong Lun { get; init; }
        public required uint InitiatorTaskTag { get; init; }
        public required byte[] Cdb { get; init; }
        public required byte[] Buffer { get; init; }
        public required int ExpectedBytes { get; init; }
        public required bool Read { get; init; }
        public int ReceivedBytes { get; set; }
        /// <summary>Unsolicited Data-Out may still come (the command had F=0 and no Data-Out with F=1 came yet).</summary>
        public bool UnsolicitedOpen { get; set; }
        public bool R2TOutstanding { get; set; }
        public uint TargetTransferTag { get; set; } = Bhs.ReservedTag;
        public uint NextR2TSn { get; set; }
        /// <summary>DataSN the next Data-Out must carry: it restarts at 0 for every R2T and for the unsolicited burst.</summary>
        public uint NextDataSn { get; set; }
    }

    private readonly Dictionary<uint, PendingWrite> _pendingWrites = [];
    private uint _nextTargetTransferTag;

    private async ValueTask ScsiCommandAsync()
    {
        var command = ScsiCommand.Parse(Header);
        if (!AcceptCmdSn())
        {
            return;
        }
        var cdb = _recv.AsMemory(ScsiCommand.CdbOffset, ScsiCommand.CdbBytes);
        int immediateBytes = Data.Length;
        bool dataOutExpected = command.Write && command.ExpectedDataTransferLength > 0;
        if (immediateBytes > 0 && (!dataOutExpected || !Parameters.ImmediateData || immediateBytes > command.ExpectedDataTransferLength))
        {
            await RejectAsync(RejectReason.ProtocolError); // immediate data the initiator was not allowed to send
            return;
        }
        if (command.ExpectedDataTransferLength > ScsiLogicalUnit.MaxTransferBytes)
        {
            await SendStatusAsync(command.InitiatorTaskTag, ScsiResult.Check(SenseData.InvalidFieldInCdb), command.ExpectedDataTransferLength, 0);
            return;
        }
        if (!dataOutExpected)
        {
            await ExecuteAsync(command.Lun, command.InitiatorTaskTag, cdb, command.Read, command.ExpectedDataTransferLength, ReadOnlyMemory<byte>.Empty);
            return;
        }
        int expected = (int)command.ExpectedDataTransferLength;
        var write = new PendingWrite
        {
            Lun = command.Lun,
            InitiatorTaskTag = command.InitiatorTaskTag,
            Cdb = cdb.ToArray(),
            Buffer = ArrayPool<byte>.Shared.Rent(expected),
            ExpectedBytes = expected,
            Read = command.Read,
            ReceivedBytes = immediateBytes,
            UnsolicitedOpen = !command.Final && !Parameters.InitialR2T,
        };
        Data.Span.CopyTo(write.Buffer);
        _pendingWrites[command.InitiatorTaskTag] = write;
        await ContinueWriteAsync(write);
    }

    /// <summary>Runs the write once all its data is in, or asks for the next burst when nothing else is on its way.</summary>
    private async ValueTask ContinueWriteAsync(PendingWrite write)
    {
        if (write.UnsolicitedOpen || write.R2TOutstanding)
        {
            return;
        }
        if (write.ReceivedBytes < write.ExpectedBytes)
        {
            await SendR2TAsync(write);
            return;
        }
        _pendingWrites.Remove(write.InitiatorTaskTag);
        try
        {
            await ExecuteAsync(write.Lun, write.InitiatorTaskTag, write.Cdb, write.Read, (uint)write.ExpectedBytes, write.Buffer.AsMemory(0, write.ExpectedBytes));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(write.Buffer);
        }
    }

    private ValueTask SendR2TAsync(PendingWrite write)
    {
        uint ttt = _nextTargetTransferTag++;
        if (ttt == Bhs.ReservedTag)
        {
            ttt = _nextTargetTransferTag++;
        }
        int length = Math.Min(Parameters.MaxBurstLength, write.ExpectedBytes - write.ReceivedBytes);
        write.TargetTransferTag = ttt;
        write.R2TOutstanding = true;
        write.NextDataSn = 0;
        new ReadyToTransfer(write.Lun, write.InitiatorTaskTag, ttt, write.NextR2TSn++, (uint)write.ReceivedBytes, (uint)length).WriteTo(_send);
        return SendAsync([], StatSn.Current);
    }

    /// <summary>
    /// Takes one Data-Out. False when it breaks the data sequence rules (offset out of order, wrong TTT or DataSN):
    /// at ErrorRecoveryLevel 0 the data can no longer be trusted and the connection is closed, failing the command.
    /// </summary>
    private async ValueTask<bool> DataOutAsync()
    {
        var data = DataOut.Parse(Header);
        if (!_pendingWrites.TryGetValue(data.InitiatorTaskTag, out var write))
        {
            // Data for a task that was aborted (or never asked for data): drop it, as RFC 7143 §11.7 allows.
            _logger.LogDebug("iSCSI {Client}: Data-Out for unknown task 0x{Itt:x8} ignored", ClientDescription, data.InitiatorTaskTag);
            return true;
        }
        bool solicited = data.TargetTransferTag != Bhs.ReservedTag;
        string? error =
            data.BufferOffset != (uint)write.ReceivedBytes ? $"offset {data.BufferOffset} where {write.ReceivedBytes} was due (DataPDUInOrder=Yes)"
            : write.ReceivedBytes + Data.Length > write.ExpectedBytes ? $"{Data.Length} bytes past the expected {write.ExpectedBytes}"
            : solicited && (!write.R2TOutstanding || data.TargetTransferTag != write.TargetTransferTag) ? $"TTT 0x{data.TargetTransferTag:x8} that no R2T gave"
            : !solicited && !write.UnsolicitedOpen ? "unsolicited data that was not allowed"
            : data.DataSn != write.NextDataSn ? $"DataSN {data.DataSn} where {write.NextDataSn} was due"
            : null;
        if (error is not null)
        {
            _logger.LogWarning("iSCSI {Client}: Data-Out for task 0x{Itt:x8} has {Error}; closing the connection (ErrorRecoveryLevel 0)",
                ClientDescription, data.InitiatorTaskTag, error);
            return false;
        }
        Data.Span.CopyTo(write.Buffer.AsSpan((int)data.BufferOffset));
        write.ReceivedBytes += Data.Length;
        write.NextDataSn++;
        if (data.Final)
        {
            if (solicited)
            {
                write.R2TOutstanding = false;
            }
            else
            {
                write.UnsolicitedOpen = false;
            }
        }
        await ContinueWriteAsync(write);
        return true;
    }

    private async ValueTask ExecuteAsync(ulong lun, uint itt, ReadOnlyMemory<byte> cdb, bool read, uint expectedBytes, ReadOnlyMemory<byte> dataOut)
    {
        int dataInBytes = read ? (int)expectedBytes : 0;
        byte[]? dataIn = dataInBytes > 0 ? ArrayPool<byte>.Shared.Rent(dataInBytes) : null;
        try
        {
            var revoked = _session?.Revoked ?? CancellationToken.None;
            var result = await _unit!.ExecuteAsync(cdb, lun == 0, dataOut, dataIn.AsMemory(0, dataInBytes), revoked);
            if (result.Status != ScsiStatus.Good)
            {
                _logger.LogDebug("iSCSI {Client}: CDB 0x{Opcode:x2} failed: {Sense}", ClientDescription, cdb.Span[0], result.Sense);
            }
            int moved = result.Status == ScsiStatus.Good ? (int)Math.Min(result.TransferBytes, dataInBytes) : 0;
            if (moved > 0)
            {
                await SendDataInAsync(lun, itt, dataIn.AsMemory(0, moved), Residual.Of(expectedBytes, result.TransferBytes));
                return;
            }
            await SendStatusAsync(itt, result, expectedBytes, 0);
        }
        finally
        {
            if (dataIn is not null)
            {
                ArrayPool<byte>.Shared.Return(dataIn);
            }
        }
    }

    /// <summary>
    /// Sends read data in PDUs of at most the initiator's MaxRecvDataSegmentLength, F set at the end of every
    /// MaxBurstLength sequence, and GOOD status with the residual in the last one.
    /// </summary>
    private async ValueTask SendDataInAsync(ulong lun, uint itt, ReadOnlyMemory<byte> data, Residual residual)
    {
        int segment = SendSegmentBytes;
        int burst = Parameters.MaxBurstLength;
        uint dataSn = 0;
        for (int offset = 0; offset < data.Length;)
        {
            int burstEnd = Math.Min(data.Length, (offset / burst + 1) * burst);
            int length = Math.Min(segment, burstEnd - offset);
            bool last = offset + length == data.Length;
            bool final = last || offset + length == burstEnd;
            new DataIn(final, last, ScsiStatus.Good, lun, itt, dataSn++, (uint)offset, residual).WriteTo(_send);
            await SendAsync(data.Span.Slice(offset, length), last ? StatSn.Advance : StatSn.None);
            offset += length;
        }
    }

    private ValueTask SendStatusAsync(uint itt, in ScsiResult result, uint expectedBytes, uint dataInPdus)
    {
        bool good = result.Status == ScsiStatus.Good;
        new ScsiResponse(itt, result.Status, Residual.Of(expectedBytes, good ? result.TransferBytes : 0), dataInPdus).WriteTo(_send);
        if (good)
        {
            return SendAsync([], StatSn.Advance);
        }
        // Sense data travels behind a 2-byte length (RFC 7143 §11.4.7.2).
        Span<byte> sense = stackalloc byte[2 + SenseData.FixedBytes];
        int senseBytes = result.Sense.WriteFixed(sense[2..]);
        BinaryPrimitives.WriteUInt16BigEndian(sense, (ushort)senseBytes);
        return SendAsync(sense[..(2 + senseBytes)], StatSn.Advance);
    }

    /// <summary>Drops a write waiting for data; false when no such write was waiting.</summary>
    private bool ReleasePendingWrite(uint itt)
    {
        if (!_pendingWrites.Remove(itt, out var write))
        {
            return false;
        }
        ArrayPool<byte>.Shared.Return(write.Buffer);
        return true;
    }

    private void ReleasePendingWrites()
    {
        foreach (var write in _pendingWrites.Values)
        {
            ArrayPool<byte>.Shared.Return(write.Buffer);
        }
        _pendingWrites.Clear();
    }
}

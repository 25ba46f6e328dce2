using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>
/// A SCSI direct-access block device (SBC-3) over an <see cref="IBlockDevice"/>: 512-byte logical and physical blocks
/// with a 4 KiB optimal granularity, thin provisioned. Transport-neutral: it takes a CDB and the data-out bytes, fills a data-in buffer
/// and says how the command ended. Split by concern: this file runs the IO commands, Inquiry.cs the descriptive ones.
/// </summary>
internal sealed partial class ScsiLogicalUnit
{
    public const int BlockBytes = 512;
    /// <summary>
    /// Physical blocks reported as logical ones (512 bytes, exponent 0); the 4 KiB preference travels as the optimal
    /// transfer and unmap granularity (VPD B0), which Linux turns into io_min and discard granularity. Reporting
    /// 4096-byte physical blocks instead makes libiscsi 1.19's CompareAndWrite.InvalidDataOutSize install a PDU hook on
    /// a thin LUN that it never removes: it rewrites CDB byte 13 of every later command, which breaks every 16-byte CDB
    /// test after it (tgt never meets it because it reports full provisioning).
    /// </summary>
    public const int PhysicalBlockExponent = 0;
    /// <summary>The volume's natural IO unit in logical blocks (4 KiB).</summary>
    public const int PreferredGranularityBlocks = 8;
    /// <summary>Largest READ/WRITE in blocks (32 MiB, as the NBD frontend), reported in the Block Limits VPD page; libiscsi's tests send 65536-block writes.</summary>
    public const uint MaxTransferBlocks = 65536;
    /// <summary>libiscsi's conformance tests require at most 1 Mi blocks here.</summary>
    public const uint MaxUnmapBlocks = 1 << 20;
    public const uint MaxUnmapDescriptors = 256;
    public const uint MaxWriteSameBlocks = 1 << 22;
    public const long MaxTransferBytes = MaxTransferBlocks * BlockBytes;

    private readonly IBlockDevice _device;
    private readonly string _exportName;
    private readonly string _targetName;
    private readonly byte[] _identity;
    private readonly PersistentReservations _reservations;
    private readonly string _initiatorPort;

    /// <param name="reservations">The unit's reservation state, shared by every session to it (a fresh one when omitted).</param>
    /// <param name="initiatorPort">This session's I_T nexus, "IQN,i,0xISID", as reservations name it.</param>
    public ScsiLogicalUnit(IBlockDevice device, string exportName, string targetName, PersistentReservations? reservations = null, string initiatorPort = "")
    {
        _device = device;
        _reservations = reservations ?? new PersistentReservations();
        _initiatorPort = initiatorPort;
        _exportName = exportName;
        _targetName = targetName;
        // Identifiers derive from the export name only, so every node serving the volume reports the same ones (multipath).
        _identity = SHA256.HashData(Encoding.UTF8.GetBytes(exportName));
    }

    private ulong BlockCount => (ulong)_device.SizeBytes / BlockBytes;

    /// <summary>Runs one command. <paramref name="dataIn"/> is as large as the initiator expects to receive (maybe empty).</summary>
    public async ValueTask<ScsiResult> ExecuteAsync(ReadOnlyMemory<byte> cdb, bool lunExists, ReadOnlyMemory<byte> dataOut, Memory<byte> dataIn, CancellationToken ct)
    {
        byte opcode = cdb.Span[0];
        if (!lunExists && opcode is not (ScsiOpcode.Inquiry or ScsiOpcode.ReportLuns or ScsiOpcode.RequestSense))
        {
            return ScsiResult.Check(SenseData.LogicalUnitNotSupported);
        }
        if (_reservations.Scsi2Conflicts(_initiatorPort, opcode) || _reservations.Conflicts(_initiatorPort, AccessOf(cdb.Span)))
        {
            return new ScsiResult(ScsiStatus.ReservationConflict, SenseData.None, 0);
        }
        try
        {
            return opcode switch
            {
                ScsiOpcode.TestUnitReady => ScsiResult.Good(),
                ScsiOpcode.RequestSense => RequestSense(cdb.Span, lunExists, dataIn.Span),
                ScsiOpcode.Inquiry => Inquiry(cdb.Span, lunExists, dataIn.Span),
                ScsiOpcode.ReportLuns => ReportLuns(cdb.Span, dataIn.Span),
                ScsiOpcode.ReadCapacity10 => ReadCapacity10(dataIn.Span),
                ScsiOpcode.ServiceActionIn16 when (cdb.Span[1] & 0x1f) == ScsiOpcode.GetLbaStatusServiceAction => await GetLbaStatusAsync(cdb, dataIn, ct),
                ScsiOpcode.ServiceActionIn16 => ServiceActionIn(cdb.Span, dataIn.Span),
                ScsiOpcode.ModeSense6 or ScsiOpcode.ModeSense10 => ModeSense(cdb.Span, dataIn.Span),
                ScsiOpcode.Read6 or ScsiOpcode.Read10 or ScsiOpcode.Read12 or ScsiOpcode.Read16 => await ReadAsync(cdb, dataIn, ct),
                ScsiOpcode.Write6 or ScsiOpcode.Write10 or ScsiOpcode.Write12 or ScsiOpcode.Write16 => await WriteAsync(cdb, dataOut, ct),
                ScsiOpcode.Verify10 or ScsiOpcode.Verify16 => await VerifyAsync(cdb, dataOut, ct),
                ScsiOpcode.SynchronizeCache10 or ScsiOpcode.SynchronizeCache16 => await SynchronizeCacheAsync(cdb, ct),
                ScsiOpcode.WriteSame10 or ScsiOpcode.WriteSame16 => await WriteSameAsync(cdb, dataOut, ct),
                ScsiOpcode.Unmap => await UnmapAsync(cdb, dataOut, ct),
                ScsiOpcode.Reserve6 or ScsiOpcode.Reserve10 => _reservations.ReserveScsi2(cdb.Span, _initiatorPort),
                ScsiOpcode.Release6 or ScsiOpcode.Release10 => _reservations.ReleaseScsi2(_initiatorPort),
                ScsiOpcode.PersistentReserveIn => _reservations.In(cdb.Span, dataIn.Span),
                ScsiOpcode.PersistentReserveOut => _reservations.Out(cdb.Span, _initiatorPort, dataOut.Span),
                _ => ScsiResult.Check(SenseData.InvalidOpcode),
            };
        }
        catch (BlockDeviceException e)
        {
            return ScsiResult.Check(SenseFor(e.Error, opcode));
        }
    }

    /// <summary>This unit's session ended: what its nexus held only while connected (a SCSI-2 reservation) is released.</summary>
    public void EndNexus() => _reservations.NexusLost(_initiatorPort);

    /// <summary>A logical unit or target reset arrived through this session.</summary>
    public void Reset() => _reservations.ResetScsi2();

    /// <summary>Which reservations block a command (SPC-4 table 5.13.1): reads and writes of the medium, and what describes it.</summary>
    private static MediumAccess AccessOf(ReadOnlySpan<byte> cdb) => cdb[0] switch
    {
        ScsiOpcode.Read6 or ScsiOpcode.Read10 or ScsiOpcode.Read12 or ScsiOpcode.Read16 or ScsiOpcode.Verify10 or ScsiOpcode.Verify16
            or ScsiOpcode.ModeSense6 or ScsiOpcode.ModeSense10 => MediumAccess.Read,
        ScsiOpcode.ServiceActionIn16 when (cdb[1] & 0x1f) == ScsiOpcode.GetLbaStatusServiceAction => MediumAccess.Read,
        ScsiOpcode.Write6 or ScsiOpcode.Write10 or ScsiOpcode.Write12 or ScsiOpcode.Write16 or ScsiOpcode.WriteSame10 or ScsiOpcode.WriteSame16
            or ScsiOpcode.Unmap or ScsiOpcode.SynchronizeCache10 or ScsiOpcode.SynchronizeCache16 => MediumAccess.Write,
        _ => MediumAccess.None,
    };

    /// <summary>Maps a device failure to sense data. Shutdown reads as "not ready": the volume is going away under us.</summary>
    internal static SenseData SenseFor(BlockError error, byte opcode) => error switch
    {
        BlockError.ReadOnly => SenseData.WriteProtected,
        BlockError.NoSpace => SenseData.SpaceAllocationFailed,
        BlockError.InvalidArgument => SenseData.LbaOutOfRange,
        BlockError.NotSupported => SenseData.InvalidFieldInCdb,
        BlockError.Shutdown => SenseData.LogicalUnitNotReady,
        _ => opcode is ScsiOpcode.Read6 or ScsiOpcode.Read10 or ScsiOpcode.Read12 or ScsiOpcode.Read16 or ScsiOpcode.Verify10 or ScsiOpcode.Verify16
            ? SenseData.UnrecoveredReadError
            : SenseData.WriteError,
    };

    /// <summary>Common checks of a block command's range; null when it may run.</summary>
    private ScsiResult? CheckRange(in BlockRange range, bool writes)
    {
        if (range.ProtectField != 0)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb); // no protection information here
        }
        if (!range.FitsIn(BlockCount))
        {
            return ScsiResult.Check(SenseData.LbaOutOfRange);
        }
        if (writes && _device.IsReadOnly)
        {
            return ScsiResult.Check(SenseData.WriteProtected);
        }
        return null;
    }

    private async ValueTask<ScsiResult> ReadAsync(ReadOnlyMemory<byte> cdb, Memory<byte> dataIn, CancellationToken ct)
    {
        var range = BlockRange.Parse(cdb.Span);
        if (range.Blocks > MaxTransferBlocks)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        if (CheckRange(range, writes: false) is { } failed)
        {
            return failed;
        }
        long bytes = (long)range.Blocks * BlockBytes;
        // The initiator may expect less than the CDB asks for; move what it expects and report the overflow.
        int moved = (int)Math.Min(bytes, dataIn.Length);
        if (moved > 0)
        {
            await _device.ReadAsync((long)range.Lba * BlockBytes, dataIn[..moved], ct);
        }
        return ScsiResult.Good(bytes);
    }

    private async ValueTask<ScsiResult> WriteAsync(ReadOnlyMemory<byte> cdb, ReadOnlyMemory<byte> dataOut, CancellationToken ct)
    {
        var range = BlockRange.Parse(cdb.Span);
        if (range.Blocks > MaxTransferBlocks)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        if (CheckRange(range, writes: true) is { } failed)
        {
            return failed;
        }
        long bytes = (long)range.Blocks * BlockBytes;
        // With fewer bytes than the CDB asks for, write what came (libiscsi's residual tests expect exactly that).
        int moved = (int)Math.Min(bytes, dataOut.Length);
        if (moved > 0)
        {
            var flags = range.ForceUnitAccess ? WriteFlags.ForceUnitAccess : WriteFlags.None;
            await _device.WriteAsync((long)range.Lba * BlockBytes, dataOut[..moved], flags, ct);
        }
        return ScsiResult.Good(bytes);
    }

    private async ValueTask<ScsiResult> SynchronizeCacheAsync(ReadOnlyMemory<byte> cdb, CancellationToken ct)
    {
        var range = BlockRange.Parse(cdb.Span);
        if (!range.FitsIn(BlockCount))
        {
            return ScsiResult.Check(SenseData.LbaOutOfRange);
        }
        await _device.FlushAsync(ct); // the device flushes everything; a range is a subset of that
        return ScsiResult.Good();
    }

    private async ValueTask<ScsiResult> VerifyAsync(ReadOnlyMemory<byte> cdb, ReadOnlyMemory<byte> dataOut, CancellationToken ct)
    {
        var range = BlockRange.Parse(cdb.Span);
        int byteCheck = (cdb.Span[1] >> 1) & 3;
        if (byteCheck == 2 || range.Blocks > MaxTransferBlocks)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        if (CheckRange(range, writes: false) is { } failed)
        {
            return failed;
        }
        if (byteCheck == 0 || range.Blocks == 0)
        {
            return ScsiResult.Good(); // medium verification: the device checksums every read anyway
        }
        int expectedBytes = byteCheck == 1 ? (int)range.Blocks * BlockBytes : BlockBytes;
        if (dataOut.Length < expectedBytes)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        int length = (int)range.Blocks * BlockBytes;
        byte[] medium = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            await _device.ReadAsync((long)range.Lba * BlockBytes, medium.AsMemory(0, length), ct);
            for (int at = 0; at < length; at += BlockBytes)
            {
                var expected = byteCheck == 1 ? dataOut.Span.Slice(at, BlockBytes) : dataOut.Span[..BlockBytes];
                int differs = medium.AsSpan(at, BlockBytes).CommonPrefixLength(expected);
                if (differs < BlockBytes)
                {
                    return ScsiResult.Check(SenseData.Miscompare((ulong)(at + differs)));
                }
            }
            return ScsiResult.Good(expectedBytes);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(medium);
        }
    }
}

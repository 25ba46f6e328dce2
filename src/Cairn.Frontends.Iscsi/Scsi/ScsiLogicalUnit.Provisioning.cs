using System.Buffers;
using System.Buffers.Binary;
using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>Thin provisioning commands: UNMAP and WRITE SAME (with its UNMAP bit) map to trim and write-zeroes.</summary>
internal sealed partial class ScsiLogicalUnit
{
    private const int UnmapHeaderBytes = 8;
    private const int UnmapDescriptorBytes = 16;
    private const int WriteSameChunkBytes = 1 << 20;
    private const int LbaStatusHeaderBytes = 8;
    private const int LbaStatusDescriptorBytes = 16;
    private const int MaxLbaStatusDescriptors = 64;

    private async ValueTask<ScsiResult> UnmapAsync(ReadOnlyMemory<byte> cdb, ReadOnlyMemory<byte> dataOut, CancellationToken ct)
    {
        if ((cdb.Span[1] & 0x01) != 0)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb); // ANCHOR: anchored LBAs are not supported
        }
        int listBytes = BinaryPrimitives.ReadUInt16BigEndian(cdb.Span[7..]);
        if (listBytes == 0)
        {
            return ScsiResult.Good();
        }
        if (listBytes < UnmapHeaderBytes || dataOut.Length < listBytes)
        {
            return ScsiResult.Check(SenseData.ParameterListLengthError);
        }
        if (_device.IsReadOnly)
        {
            return ScsiResult.Check(SenseData.WriteProtected);
        }
        var list = dataOut[..listBytes];
        int descriptorBytes = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(list.Span[2..]), listBytes - UnmapHeaderBytes);
        int count = descriptorBytes / UnmapDescriptorBytes;
        if (count > MaxUnmapDescriptors)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInParameterList);
        }
        // Validate every descriptor before trimming any, so a bad list changes nothing.
        for (int i = 0; i < count; i++)
        {
            var d = list.Span.Slice(UnmapHeaderBytes + (i * UnmapDescriptorBytes), UnmapDescriptorBytes);
            var range = new BlockRange(BinaryPrimitives.ReadUInt64BigEndian(d), BinaryPrimitives.ReadUInt32BigEndian(d[8..]), false, 0);
            if (range.Blocks > MaxUnmapBlocks)
            {
                return ScsiResult.Check(SenseData.InvalidFieldInParameterList);
            }
            if (!range.FitsIn(BlockCount))
            {
                return ScsiResult.Check(SenseData.LbaOutOfRange);
            }
        }
        for (int i = 0; i < count; i++)
        {
            var d = list.Slice(UnmapHeaderBytes + (i * UnmapDescriptorBytes), UnmapDescriptorBytes);
            ulong lba = BinaryPrimitives.ReadUInt64BigEndian(d.Span);
            uint blocks = BinaryPrimitives.ReadUInt32BigEndian(d.Span[8..]);
            if (blocks > 0)
            {
                await _device.TrimAsync((long)lba * BlockBytes, (long)blocks * BlockBytes, WriteFlags.None, ct);
            }
        }
        return ScsiResult.Good();
    }

    private async ValueTask<ScsiResult> WriteSameAsync(ReadOnlyMemory<byte> cdb, ReadOnlyMemory<byte> dataOut, CancellationToken ct)
    {
        var range = BlockRange.Parse(cdb.Span);
        byte flags = cdb.Span[1];
        bool unmap = (flags & 0x08) != 0;
        bool anchor = (flags & 0x10) != 0;
        bool noDataOut = cdb.Span[0] == ScsiOpcode.WriteSame16 && (flags & 0x01) != 0;
        // WSNZ is set in the Block Limits page: zero blocks ("to the end of the medium") is refused.
        if (anchor || range.Blocks == 0 || range.Blocks > MaxWriteSameBlocks)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        if (CheckRange(range, writes: true) is { } failed)
        {
            return failed;
        }
        if (!noDataOut && dataOut.Length != BlockBytes)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb); // the data-out buffer is exactly one block
        }
        long offset = (long)range.Lba * BlockBytes;
        long length = (long)range.Blocks * BlockBytes;
        var pattern = noDataOut ? default : dataOut[..BlockBytes];
        if (noDataOut || !pattern.Span.ContainsAnyExcept((byte)0))
        {
            // Unmapped blocks read as zeros (LBPRZ), so a zero pattern with UNMAP may simply trim.
            if (unmap)
            {
                await _device.TrimAsync(offset, length, WriteFlags.None, ct);
            }
            else
            {
                await _device.WriteZeroesAsync(offset, length, ZeroFlags.None, WriteFlags.None, ct);
            }
            return ScsiResult.Good(noDataOut ? 0 : BlockBytes);
        }
        await WritePatternAsync(offset, length, pattern, ct);
        return ScsiResult.Good(BlockBytes);
    }

    private async ValueTask WritePatternAsync(long offset, long length, ReadOnlyMemory<byte> pattern, CancellationToken ct)
    {
        int chunkBytes = (int)Math.Min(length, WriteSameChunkBytes);
        byte[] chunk = ArrayPool<byte>.Shared.Rent(chunkBytes);
        try
        {
            for (int at = 0; at < chunkBytes; at += BlockBytes)
            {
                pattern.Span.CopyTo(chunk.AsSpan(at));
            }
            for (long done = 0; done < length; done += chunkBytes)
            {
                int now = (int)Math.Min(chunkBytes, length - done);
                await _device.WriteAsync(offset + done, chunk.AsMemory(0, now), WriteFlags.None, ct);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
    }

    /// <summary>GET LBA STATUS (SBC-3 §5.7): mapped or deallocated runs from the device's allocation map.</summary>
    private async ValueTask<ScsiResult> GetLbaStatusAsync(ReadOnlyMemory<byte> cdb, Memory<byte> dataIn, CancellationToken ct)
    {
        ulong lba = BinaryPrimitives.ReadUInt64BigEndian(cdb.Span[2..]);
        uint allocation = BinaryPrimitives.ReadUInt32BigEndian(cdb.Span[10..]);
        if (lba >= BlockCount)
        {
            return ScsiResult.Check(SenseData.LbaOutOfRange);
        }
        // As many runs as the initiator can take, at least one (a short allocation length cuts the transfer below).
        long room = Math.Min(allocation, dataIn.Length) - LbaStatusHeaderBytes;
        int descriptors = (int)Math.Clamp(room / LbaStatusDescriptorBytes, 1, MaxLbaStatusDescriptors);
        var extents = new AllocationExtent[descriptors];
        long offset = (long)lba * BlockBytes;
        int count = await _device.GetAllocationAsync(offset, _device.SizeBytes - offset, extents, ct);
        var response = new byte[LbaStatusHeaderBytes + (descriptors * LbaStatusDescriptorBytes)];
        int written = 0;
        ulong at = lba;
        for (int i = 0; i < count && at < BlockCount; i++)
        {
            // Round to whole blocks, but always move forward: the device may report runs finer than 512 bytes.
            ulong blocks = Math.Max(1, (ulong)extents[i].LengthBytes / BlockBytes);
            blocks = Math.Min(blocks, Math.Min(BlockCount - at, uint.MaxValue));
            var d = response.AsSpan(LbaStatusHeaderBytes + (written * LbaStatusDescriptorBytes), LbaStatusDescriptorBytes);
            BinaryPrimitives.WriteUInt64BigEndian(d, at);
            BinaryPrimitives.WriteUInt32BigEndian(d[8..], (uint)blocks);
            d[12] = extents[i].State == AllocationState.Hole ? (byte)1 : (byte)0; // deallocated : mapped
            written++;
            at += blocks;
        }
        int length = LbaStatusHeaderBytes + (written * LbaStatusDescriptorBytes);
        BinaryPrimitives.WriteUInt32BigEndian(response, (uint)(length - 4));
        return Respond(response.AsSpan(0, length), (int)Math.Min(allocation, int.MaxValue), dataIn.Span);
    }
}

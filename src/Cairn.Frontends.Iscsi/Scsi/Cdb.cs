using System.Buffers.Binary;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>SCSI operation codes this target knows (SPC-4, SBC-3).</summary>
internal static class ScsiOpcode
{
    public const byte TestUnitReady = 0x00;
    public const byte RequestSense = 0x03;
    public const byte Read6 = 0x08;
    public const byte Write6 = 0x0A;
    public const byte Inquiry = 0x12;
    public const byte ModeSense6 = 0x1A;
    public const byte ReadCapacity10 = 0x25;
    public const byte Read10 = 0x28;
    public const byte Write10 = 0x2A;
    public const byte Verify10 = 0x2F;
    public const byte SynchronizeCache10 = 0x35;
    public const byte WriteSame10 = 0x41;
    public const byte Unmap = 0x42;
    public const byte ModeSense10 = 0x5A;
    public const byte Reserve6 = 0x16;
    public const byte Release6 = 0x17;
    public const byte Reserve10 = 0x56;
    public const byte Release10 = 0x57;
    public const byte PersistentReserveIn = 0x5E;
    public const byte PersistentReserveOut = 0x5F;
    public const byte Read16 = 0x88;
    public const byte Write16 = 0x8A;
    public const byte Verify16 = 0x8F;
    public const byte SynchronizeCache16 = 0x91;
    public const byte WriteSame16 = 0x93;
    public const byte ServiceActionIn16 = 0x9E;
    public const byte ReportLuns = 0xA0;
    public const byte Read12 = 0xA8;
    public const byte Write12 = 0xAA;

    public const byte ReadCapacity16ServiceAction = 0x10;
    public const byte GetLbaStatusServiceAction = 0x12;
}

/// <summary>The block range and flags of a READ, WRITE, VERIFY, WRITE SAME or SYNCHRONIZE CACHE CDB.</summary>
internal readonly record struct BlockRange(ulong Lba, uint Blocks, bool ForceUnitAccess, byte ProtectField)
{
    /// <summary>Parses the range of a CDB whose opcode the caller already knows is a block command.</summary>
    public static BlockRange Parse(ReadOnlySpan<byte> cdb) =>
        TryParse(cdb, out var range) ? range : throw new ArgumentException($"opcode 0x{cdb[0]:x2} has no block range", nameof(cdb));

    /// <summary>Parses the range of any block command by its CDB size; false for opcodes without one.</summary>
    public static bool TryParse(ReadOnlySpan<byte> cdb, out BlockRange range)
    {
        byte opcode = cdb[0];
        bool fua = (cdb[1] & 0x08) != 0;
        byte protect = (byte)(cdb[1] >> 5);
        switch (opcode)
        {
            case ScsiOpcode.Read6 or ScsiOpcode.Write6:
                // 21-bit LBA; a transfer length of 0 means 256 blocks (SBC-3 §5.15).
                uint lba6 = (uint)(((cdb[1] & 0x1f) << 16) | (cdb[2] << 8) | cdb[3]);
                range = new(lba6, cdb[4] == 0 ? 256u : cdb[4], false, 0);
                return true;
            case ScsiOpcode.Read10 or ScsiOpcode.Write10 or ScsiOpcode.Verify10 or ScsiOpcode.SynchronizeCache10 or ScsiOpcode.WriteSame10:
                range = new(BinaryPrimitives.ReadUInt32BigEndian(cdb[2..]), BinaryPrimitives.ReadUInt16BigEndian(cdb[7..]), fua, protect);
                return true;
            case ScsiOpcode.Read12 or ScsiOpcode.Write12:
                range = new(BinaryPrimitives.ReadUInt32BigEndian(cdb[2..]), BinaryPrimitives.ReadUInt32BigEndian(cdb[6..]), fua, protect);
                return true;
            case ScsiOpcode.Read16 or ScsiOpcode.Write16 or ScsiOpcode.Verify16 or ScsiOpcode.SynchronizeCache16 or ScsiOpcode.WriteSame16:
                range = new(BinaryPrimitives.ReadUInt64BigEndian(cdb[2..]), BinaryPrimitives.ReadUInt32BigEndian(cdb[10..]), fua, protect);
                return true;
            default:
                range = default;
                return false;
        }
    }

    /// <summary>Whether the range lies inside a device of <paramref name="blockCount"/> blocks (an empty range may start at the end).</summary>
    public bool FitsIn(ulong blockCount) => Lba <= blockCount && Blocks <= blockCount - Lba;
}

using System.Buffers.Binary;

namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>iSCSI opcodes (RFC 7143 §11.2.1.2): initiator opcodes 0x00–0x1f, target opcodes 0x20–0x3f.</summary>
internal enum Opcode : byte
{
    NopOut = 0x00,
    ScsiCommand = 0x01,
    TaskManagementRequest = 0x02,
    LoginRequest = 0x03,
    TextRequest = 0x04,
    DataOut = 0x05,
    LogoutRequest = 0x06,
    SnackRequest = 0x10,
    NopIn = 0x20,
    ScsiResponse = 0x21,
    TaskManagementResponse = 0x22,
    LoginResponse = 0x23,
    TextResponse = 0x24,
    DataIn = 0x25,
    LogoutResponse = 0x26,
    ReadyToTransfer = 0x31,
    AsyncMessage = 0x32,
    Reject = 0x3f,
}

/// <summary>
/// The 48-byte Basic Header Segment: accessors for the fields every PDU shares. All multi-byte fields are big-endian.
/// Every target PDU carries StatSN, ExpCmdSN and MaxCmdSN at offsets 24, 28 and 32, so the sender stamps them in one place.
/// </summary>
internal static class Bhs
{
    public const int Length = 48;
    public const int DigestBytes = 4;
    public const int MaxAhsBytes = 255 * 4;
    /// <summary>The "no tag" value of ITT and TTT fields.</summary>
    public const uint ReservedTag = 0xFFFF_FFFF;
    public const byte FinalBit = 0x80;
    public const byte ImmediateBit = 0x40;
    public const int StatSnOffset = 24;
    public const int ExpCmdSnOffset = 28;
    public const int MaxCmdSnOffset = 32;

    public static Opcode GetOpcode(ReadOnlySpan<byte> bhs) => (Opcode)(bhs[0] & 0x3f);

    public static bool IsImmediate(ReadOnlySpan<byte> bhs) => (bhs[0] & ImmediateBit) != 0;

    public static bool IsFinal(ReadOnlySpan<byte> bhs) => (bhs[1] & FinalBit) != 0;

    public static int TotalAhsBytes(ReadOnlySpan<byte> bhs) => bhs[4] * 4;

    public static int DataSegmentLength(ReadOnlySpan<byte> bhs) => (bhs[5] << 16) | (bhs[6] << 8) | bhs[7];

    public static void SetDataSegmentLength(Span<byte> bhs, int length)
    {
        if ((uint)length > 0xFF_FFFF)
        {
            throw new ArgumentOutOfRangeException(nameof(length), "a data segment is at most 2^24-1 bytes");
        }
        bhs[5] = (byte)(length >> 16);
        bhs[6] = (byte)(length >> 8);
        bhs[7] = (byte)length;
    }

    public static ulong Lun(ReadOnlySpan<byte> bhs) => BinaryPrimitives.ReadUInt64BigEndian(bhs[8..]);

    public static uint InitiatorTaskTag(ReadOnlySpan<byte> bhs) => U32(bhs, 16);

    public static uint U32(ReadOnlySpan<byte> bhs, int offset) => BinaryPrimitives.ReadUInt32BigEndian(bhs[offset..]);

    public static ushort U16(ReadOnlySpan<byte> bhs, int offset) => BinaryPrimitives.ReadUInt16BigEndian(bhs[offset..]);

    public static void Put(Span<byte> bhs, int offset, uint value) => BinaryPrimitives.WriteUInt32BigEndian(bhs[offset..], value);

    public static void Put(Span<byte> bhs, int offset, ushort value) => BinaryPrimitives.WriteUInt16BigEndian(bhs[offset..], value);

    public static void Put(Span<byte> bhs, int offset, ulong value) => BinaryPrimitives.WriteUInt64BigEndian(bhs[offset..], value);

    /// <summary>Data segments and AHS are padded with zeros to a multiple of 4 bytes.</summary>
    public static int Padded(int length) => (length + 3) & ~3;

    /// <summary>Serial number arithmetic (RFC 1982, 32 bits) as CmdSN and StatSN use it: is <paramref name="a"/> before <paramref name="b"/>?</summary>
    public static bool SerialLess(uint a, uint b) => a != b && (int)(a - b) < 0;
}

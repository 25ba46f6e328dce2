using System.Buffers.Binary;

namespace Cairn.Frontends.Nbd;

/// <summary>One transmission-phase request header, parsed in place from the receive buffer.</summary>
internal readonly struct NbdRequest
{
    public NbdRequest(CommandFlags flags, ushort command, ulong cookie, ulong offset, uint length)
    {
        Flags = flags;
        Command = command;
        Cookie = cookie;
        Offset = offset;
        Length = length;
    }

    public CommandFlags Flags { get; }
    /// <summary>Raw command number; unknown values must still be answered, so this is not forced into the enum.</summary>
    public ushort Command { get; }
    public ulong Cookie { get; }
    public ulong Offset { get; }
    public uint Length { get; }

    public bool IsWrite => Command == (ushort)NbdCommand.Write;

    /// <summary>Reads a 28-byte header; returns false when the magic is wrong (the stream can no longer be trusted).</summary>
    public static bool TryParse(ReadOnlySpan<byte> header, out NbdRequest request)
    {
        if (BinaryPrimitives.ReadUInt32BigEndian(header) != NbdProtocol.RequestMagic)
        {
            request = default;
            return false;
        }
        request = new NbdRequest(
            (CommandFlags)BinaryPrimitives.ReadUInt16BigEndian(header[4..]),
            BinaryPrimitives.ReadUInt16BigEndian(header[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(header[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(header[16..]),
            BinaryPrimitives.ReadUInt32BigEndian(header[24..]));
        return true;
    }
}

/// <summary>Writers for transmission replies; each returns the bytes it wrote.</summary>
internal static class NbdReplyWriter
{
    public static int Simple(Span<byte> destination, ulong cookie, uint errno)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdProtocol.SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], errno);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], cookie);
        return NbdProtocol.SimpleReplyBytes;
    }

    public static int ChunkHeader(Span<byte> destination, ulong cookie, ReplyChunkType type, uint payloadBytes, bool done = true)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdProtocol.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], done ? (ushort)1 : (ushort)0);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], payloadBytes);
        return NbdProtocol.StructuredHeaderBytes;
    }

    /// <summary>The header that precedes read data: a simple reply, or one OFFSET_DATA chunk with DONE (so DF always holds).</summary>
    public static int ReadHeader(Span<byte> destination, bool structured, ulong cookie, ulong offset, int lengthBytes)
    {
        if (!structured)
        {
            return Simple(destination, cookie, NbdErrno.None);
        }
        ChunkHeader(destination, cookie, ReplyChunkType.OffsetData, (uint)lengthBytes + 8);
        BinaryPrimitives.WriteUInt64BigEndian(destination[NbdProtocol.StructuredHeaderBytes..], offset);
        return NbdProtocol.OffsetDataHeaderBytes;
    }

    public static int ReadHeaderBytes(bool structured) =>
        structured ? NbdProtocol.OffsetDataHeaderBytes : NbdProtocol.SimpleReplyBytes;

    /// <summary>
    /// An error reply. Reads under structured replies must get an ERROR chunk (a simple reply there would be
    /// ambiguous); every other command may use a simple reply, which all clients understand.
    /// </summary>
    public static int Error(Span<byte> destination, bool structuredRead, ulong cookie, uint errno)
    {
        if (!structuredRead)
        {
            return Simple(destination, cookie, errno);
        }
        ChunkHeader(destination, cookie, ReplyChunkType.Error, 4 + 2);
        BinaryPrimitives.WriteUInt32BigEndian(destination[20..], errno);
        BinaryPrimitives.WriteUInt16BigEndian(destination[24..], 0);
        return NbdProtocol.ErrorChunkBytes;
    }
}

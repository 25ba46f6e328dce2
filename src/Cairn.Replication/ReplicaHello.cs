using System.Buffers.Binary;
using System.Text;

namespace Cairn.Replication;

/// <summary>Encoding of the hello that opens a replica connection, and of its reply (see <see cref="ReplicaProtocol"/>).</summary>
public static class ReplicaHello
{
    public static byte[] Encode(string replica, ulong epoch)
    {
        int nameLength = Encoding.UTF8.GetByteCount(replica);
        if (nameLength is 0 or > ReplicaProtocol.MaxNameBytes)
        {
            throw new ArgumentException($"replica name must be 1-{ReplicaProtocol.MaxNameBytes} bytes of UTF-8", nameof(replica));
        }
        byte[] hello = new byte[ReplicaProtocol.HelloHeaderSize + nameLength];
        BinaryPrimitives.WriteUInt32LittleEndian(hello, ReplicaProtocol.HelloMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(4), ReplicaProtocol.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(6), (ushort)nameLength);
        BinaryPrimitives.WriteUInt64LittleEndian(hello.AsSpan(8), epoch);
        Encoding.UTF8.GetBytes(replica, hello.AsSpan(ReplicaProtocol.HelloHeaderSize));
        return hello;
    }

    public static bool TryDecodeHeader(ReadOnlySpan<byte> header, out int nameLength, out ulong epoch, out string error)
    {
        nameLength = BinaryPrimitives.ReadUInt16LittleEndian(header[6..]);
        epoch = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(header);
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(header[4..]);
        error = magic != ReplicaProtocol.HelloMagic ? $"bad hello magic 0x{magic:x8}"
            : version != ReplicaProtocol.Version ? $"protocol version {version}, this node speaks {ReplicaProtocol.Version}"
            : nameLength is 0 or > ReplicaProtocol.MaxNameBytes ? $"replica name of {nameLength} bytes"
            : "";
        return error.Length == 0;
    }

    public static void EncodeReply(Span<byte> reply, ReplicaStatus status, ulong epoch, long sizeBytes)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(reply, ReplicaProtocol.HelloReplyMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(reply[4..], (uint)status);
        BinaryPrimitives.WriteUInt64LittleEndian(reply[8..], epoch);
        BinaryPrimitives.WriteInt64LittleEndian(reply[16..], sizeBytes);
    }

    public static bool TryDecodeReply(ReadOnlySpan<byte> reply, out ReplicaStatus status, out ulong epoch, out long sizeBytes)
    {
        status = (ReplicaStatus)BinaryPrimitives.ReadUInt32LittleEndian(reply[4..]);
        epoch = BinaryPrimitives.ReadUInt64LittleEndian(reply[8..]);
        sizeBytes = BinaryPrimitives.ReadInt64LittleEndian(reply[16..]);
        return BinaryPrimitives.ReadUInt32LittleEndian(reply) == ReplicaProtocol.HelloReplyMagic;
    }
}

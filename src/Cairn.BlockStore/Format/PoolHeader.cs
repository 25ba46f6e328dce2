using System.Buffers.Binary;
using Cairn.BlockStore.Storage;

namespace Cairn.BlockStore.Format;

/// <summary>
/// pool.cairn, 512 bytes, written once at creation (tmp + fsync + rename + fsync dir):
/// magic "CAIRNPOL"(8) version(2) minCompat(2) headerBytes=512(4) blockBytes(4) reserved(4)
/// capacityBytes(8) createdUnixMs(8) poolId(16) nameLength(2) name(UTF-8, ≤ 255) ... crc32c(4) at 508.
/// </summary>
internal sealed record PoolHeader(string Name, long CapacityBytes, DateTimeOffset CreatedAt, Guid PoolId)
{
    public const int Bytes = 512;
    public const int MaxNameBytes = 255;
    public static ReadOnlySpan<byte> Magic => "CAIRNPOL"u8;

    /// <summary>The version the file was written with (what <see cref="Encode"/> writes is always the current one).</summary>
    public ushort Version { get; init; } = PoolFormat.Version;

    /// <summary>Writes the header to its temp file, then renames it into place; the rename is durable when this returns.</summary>
    public void WriteTo(IPoolMedium medium)
    {
        using (var tmp = medium.Open(PoolFormat.HeaderTempFile, create: true))
        {
            tmp.SetLength(0);
            tmp.WriteAt(0, Encode());
            tmp.Sync();
        }
        medium.Rename(PoolFormat.HeaderTempFile, PoolFormat.HeaderFile);
        medium.SyncDirectory();
    }

    public byte[] Encode()
    {
        var buffer = new byte[Bytes];
        var span = buffer.AsSpan();
        PoolFormat.WriteCommonHeader(span, Magic, Bytes);
        BinaryPrimitives.WriteInt32LittleEndian(span[16..], PoolFormat.BlockBytes);
        BinaryPrimitives.WriteInt64LittleEndian(span[24..], CapacityBytes);
        BinaryPrimitives.WriteInt64LittleEndian(span[32..], CreatedAt.ToUnixTimeMilliseconds());
        PoolId.TryWriteBytes(span[40..56]);
        int nameBytes = PoolFormat.StrictUtf8.GetBytes(Name, span[58..]);
        BinaryPrimitives.WriteUInt16LittleEndian(span[56..], (ushort)nameBytes);
        PoolFormat.SealHeader(span, Bytes);
        return buffer;
    }

    public static PoolHeader Read(IPoolMedium medium)
    {
        if (!medium.Exists(PoolFormat.HeaderFile))
        {
            throw new PoolFormatException($"'{medium.Location}' is not a Cairn pool: it has no {PoolFormat.HeaderFile}.");
        }
        var buffer = new byte[Bytes];
        int n;
        using (var file = medium.Open(PoolFormat.HeaderFile, create: false))
        {
            n = file.ReadAt(0, buffer);
        }
        var span = buffer.AsSpan(0, n);
        ushort version = PoolFormat.CheckHeader(span, Magic, "pool header", medium.Location);
        int blockBytes = BinaryPrimitives.ReadInt32LittleEndian(span[16..]);
        if (blockBytes != PoolFormat.BlockBytes)
        {
            throw new PoolFormatException($"pool header in '{medium.Location}' has block size {blockBytes}; this build supports {PoolFormat.BlockBytes}.");
        }
        int nameBytes = BinaryPrimitives.ReadUInt16LittleEndian(span[56..]);
        if (nameBytes > MaxNameBytes)
        {
            throw new PoolFormatException($"pool header in '{medium.Location}' is corrupt (name length {nameBytes}).");
        }
        return new PoolHeader(
            PoolFormat.StrictUtf8.GetString(span.Slice(58, nameBytes)),
            BinaryPrimitives.ReadInt64LittleEndian(span[24..]),
            DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(span[32..])),
            new Guid(span[40..56])) { Version = version };
    }
}

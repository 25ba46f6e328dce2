using System.Buffers.Binary;
using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore.Format;

/// <summary>
/// checkpoint.cairn: every volume's metadata and map at one generation, written to a temp file and renamed into place.
/// Header (64 bytes): magic "CAIRNCKP"(8) version(2) minCompat(2) headerBytes=64(4) blockBytes(4) volumeCount(4)
/// generation(8) poolId(16) nextVolumeIndex(4) zeros crc32c(4).
/// Per volume: index u32, size u64, createdUnixMs i64, idLength u16, id UTF-8,
/// then (block u64, physical+1 u32, crc u32) for every non-hole entry, ascending, ended by block = -1 (16 bytes).
/// Trailer: crc32c(4) of everything after the header, magic "CKPE"(4).
/// </summary>
internal static class CheckpointFile
{
    public const int HeaderBytes = PoolFormat.CommonHeaderBytes;
    public const uint TrailerMagic = 0x45504B43; // "CKPE"
    public static ReadOnlySpan<byte> Magic => "CAIRNCKP"u8;
    private const int VolumeHeaderBytes = 22;
    private const long EndOfVolume = -1;

    /// <summary>Serializes the maps as they are now (a fuzzy snapshot: journal replay afterwards fixes any entry that moved meanwhile).</summary>
    public static void Write(IStorageFile file, ulong generation, Guid poolId, uint nextVolumeIndex, IReadOnlyList<ThinVolume> volumes)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        header.Clear();
        PoolFormat.WriteCommonHeader(header, Magic, HeaderBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], PoolFormat.BlockBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header[20..], volumes.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(header[24..], generation);
        poolId.TryWriteBytes(header[32..48]);
        BinaryPrimitives.WriteUInt32LittleEndian(header[48..], nextVolumeIndex);
        PoolFormat.SealHeader(header, HeaderBytes);
        file.WriteAt(0, header);

        var writer = new ChecksummedWriter(file, HeaderBytes);
        Span<byte> rec = stackalloc byte[16];
        Span<byte> vh = stackalloc byte[VolumeHeaderBytes + PoolHeader.MaxNameBytes];
        foreach (var v in volumes)
        {
            var (size, map) = v.SnapshotMetadata();
            int idBytes = PoolFormat.StrictUtf8.GetByteCount(v.Id);
            BinaryPrimitives.WriteUInt32LittleEndian(vh, v.Index);
            BinaryPrimitives.WriteInt64LittleEndian(vh[4..], size);
            BinaryPrimitives.WriteInt64LittleEndian(vh[12..], v.CreatedAt.ToUnixTimeMilliseconds());
            BinaryPrimitives.WriteUInt16LittleEndian(vh[20..], (ushort)idBytes);
            PoolFormat.StrictUtf8.GetBytes(v.Id, vh[VolumeHeaderBytes..]);
            writer.Write(vh[..(VolumeHeaderBytes + idBytes)]);
            long blocks = VolumeImage.BlocksFor(size);
            for (long b = 0; b < blocks; b++)
            {
                if (map.IsPageEmpty(b))
                {
                    b |= ExtentMap.PageEntries - 1;
                    continue;
                }
                ulong e = map.Get(b);
                if (e == 0)
                {
                    continue;
                }
                BinaryPrimitives.WriteInt64LittleEndian(rec, b);
                BinaryPrimitives.WriteUInt64LittleEndian(rec[8..], e);
                writer.Write(rec);
            }
            BinaryPrimitives.WriteInt64LittleEndian(rec, EndOfVolume);
            BinaryPrimitives.WriteUInt64LittleEndian(rec[8..], 0);
            writer.Write(rec);
        }
        writer.Finish();
    }

    public static void Read(IStorageFile file, Guid poolId, PoolImage image, string location)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        if (file.ReadAt(0, header) < HeaderBytes)
        {
            throw image.Corrupt("checkpoint shorter than its header");
        }
        PoolFormat.CheckHeader(header, Magic, "checkpoint", location);
        VerifyBody(file, image); // before applying anything: a damaged checkpoint is refused, never half-loaded
        if (new Guid(header[32..48]) != poolId)
        {
            throw image.Corrupt("checkpoint belongs to another pool");
        }
        int volumeCount = BinaryPrimitives.ReadInt32LittleEndian(header[20..]);
        image.Generation = BinaryPrimitives.ReadUInt64LittleEndian(header[24..]);
        image.NextVolumeIndex = BinaryPrimitives.ReadUInt32LittleEndian(header[48..]);
        var reader = new ChecksummedReader(file, HeaderBytes, image);
        Span<byte> vh = stackalloc byte[VolumeHeaderBytes];
        Span<byte> id = stackalloc byte[PoolHeader.MaxNameBytes];
        Span<byte> rec = stackalloc byte[16];
        for (int i = 0; i < volumeCount; i++)
        {
            reader.Read(vh);
            uint index = BinaryPrimitives.ReadUInt32LittleEndian(vh);
            long size = BinaryPrimitives.ReadInt64LittleEndian(vh[4..]);
            int idBytes = BinaryPrimitives.ReadUInt16LittleEndian(vh[20..]);
            if (idBytes > PoolHeader.MaxNameBytes || size < 0)
            {
                throw image.Corrupt("checkpoint volume record");
            }
            reader.Read(id[..idBytes]);
            image.Create(index, PoolFormat.StrictUtf8.GetString(id[..idBytes]), size,
                DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(vh[12..])));
            while (true)
            {
                reader.Read(rec);
                long block = BinaryPrimitives.ReadInt64LittleEndian(rec);
                if (block == EndOfVolume)
                {
                    break;
                }
                image.Set(index, block, BinaryPrimitives.ReadUInt64LittleEndian(rec[8..]));
            }
        }
        reader.VerifyTrailer();
    }

    private static void VerifyBody(IStorageFile file, PoolImage image)
    {
        long bodyEnd = file.Length - 8;
        if (bodyEnd < HeaderBytes)
        {
            throw image.Corrupt("checkpoint is truncated");
        }
        var buffer = new byte[1 << 20];
        uint crc = ~0u;
        for (long offset = HeaderBytes; offset < bodyEnd;)
        {
            int n = file.ReadAt(offset, buffer.AsSpan(0, (int)Math.Min(buffer.Length, bodyEnd - offset)));
            if (n == 0)
            {
                throw image.Corrupt("checkpoint is truncated");
            }
            crc = Crc32C.Append(crc, buffer.AsSpan(0, n));
            offset += n;
        }
        Span<byte> trailer = stackalloc byte[8];
        if (file.ReadAt(bodyEnd, trailer) != 8 || BinaryPrimitives.ReadUInt32LittleEndian(trailer[4..]) != TrailerMagic
            || BinaryPrimitives.ReadUInt32LittleEndian(trailer) != ~crc)
        {
            throw image.Corrupt("checkpoint checksum mismatch");
        }
    }

    private sealed class ChecksummedWriter(IStorageFile file, long offset)
    {
        private readonly byte[] _buffer = new byte[1 << 20];
        private int _used;
        private long _offset = offset;
        private uint _crc = ~0u;

        public void Write(ReadOnlySpan<byte> bytes)
        {
            if (_used + bytes.Length > _buffer.Length)
            {
                Drain();
            }
            bytes.CopyTo(_buffer.AsSpan(_used));
            _used += bytes.Length;
        }

        public void Finish()
        {
            Drain();
            Span<byte> trailer = stackalloc byte[8];
            BinaryPrimitives.WriteUInt32LittleEndian(trailer, ~_crc);
            BinaryPrimitives.WriteUInt32LittleEndian(trailer[4..], TrailerMagic);
            file.WriteAt(_offset, trailer);
        }

        private void Drain()
        {
            var chunk = _buffer.AsSpan(0, _used);
            _crc = Crc32C.Append(_crc, chunk);
            file.WriteAt(_offset, chunk);
            _offset += _used;
            _used = 0;
        }
    }

    private sealed class ChecksummedReader(IStorageFile file, long offset, PoolImage image)
    {
        private readonly byte[] _buffer = new byte[1 << 20];
        private int _pos;
        private int _filled;
        private long _offset = offset;
        private uint _crc = ~0u;

        public void Read(Span<byte> destination)
        {
            if (!TryRead(destination))
            {
                throw image.Corrupt("checkpoint is truncated");
            }
            _crc = Crc32C.Append(_crc, destination);
        }

        public void VerifyTrailer()
        {
            Span<byte> trailer = stackalloc byte[8];
            if (!TryRead(trailer) || BinaryPrimitives.ReadUInt32LittleEndian(trailer[4..]) != TrailerMagic
                || BinaryPrimitives.ReadUInt32LittleEndian(trailer) != ~_crc)
            {
                throw image.Corrupt("checkpoint checksum mismatch");
            }
        }

        private bool TryRead(Span<byte> destination)
        {
            int done = 0;
            while (done < destination.Length)
            {
                if (_pos == _filled)
                {
                    _filled = file.ReadAt(_offset, _buffer);
                    _offset += _filled;
                    _pos = 0;
                    if (_filled == 0)
                    {
                        return false;
                    }
                }
                int n = Math.Min(destination.Length - done, _filled - _pos);
                _buffer.AsSpan(_pos, n).CopyTo(destination[done..]);
                _pos += n;
                done += n;
            }
            return true;
        }
    }
}

using System.Buffers.Binary;
using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore.Format;

internal enum CheckpointNodeKind : byte { Volume = 0, Snapshot = 1, HiddenSnapshot = 2 }

/// <summary>One map as a checkpoint stores it, captured at a batch boundary (the map of a live volume is a fork).</summary>
internal sealed record CheckpointNode(CheckpointNodeKind Kind, uint Index, uint OwnerIndex, uint? ParentIndex, long SizeBytes,
    DateTimeOffset CreatedAt, string Name, ExtentMap Map, ExtentMap? ParentMap);

/// <summary>
/// checkpoint.cairn: every map at one generation, written to a temp file and renamed into place.
/// Header (64 bytes): magic "CAIRNCKP"(8) version(2) minCompat(2) headerBytes=64(4) blockBytes(4) recordCount(4)
/// generation(8) poolId(16) nextVolumeIndex(4) zeros crc32c(4).
/// v2 body, one record per map, parents first: kind u8 (0 volume, 1 snapshot, 2 deleted snapshot kept while two
/// children share its blocks), index u32, owner u32 (the volume a
/// snapshot belongs to; a volume's own index), parent u32 (0xFFFFFFFF = none), size u64, createdUnixMs i64,
/// nameLength u16, name UTF-8, then (block u64, physical+1 u32, crc u32) for every entry that differs from the
/// parent's (holes included), ascending, ended by block = -1 (16 bytes).
/// v1 body (still read): per volume index u32, size u64, createdUnixMs i64, idLength u16, id, then its non-hole entries.
/// Trailer: crc32c(4) of everything after the header, magic "CKPE"(4).
/// </summary>
internal static class CheckpointFile
{
    public const int HeaderBytes = PoolFormat.CommonHeaderBytes;
    public const uint TrailerMagic = 0x45504B43; // "CKPE"
    public static ReadOnlySpan<byte> Magic => "CAIRNCKP"u8;
    private const int V1VolumeHeaderBytes = 22;
    private const int NodeHeaderBytes = 31;
    private const uint NoParent = uint.MaxValue;
    private const long EndOfMap = -1;

    /// <summary>Serializes captured maps; each is stored as its difference from its parent, so shared pages cost nothing.</summary>
    public static void Write(IStorageFile file, ulong generation, Guid poolId, uint nextVolumeIndex, IReadOnlyList<CheckpointNode> nodes)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        header.Clear();
        PoolFormat.WriteCommonHeader(header, Magic, HeaderBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], PoolFormat.BlockBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header[20..], nodes.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(header[24..], generation);
        poolId.TryWriteBytes(header[32..48]);
        BinaryPrimitives.WriteUInt32LittleEndian(header[48..], nextVolumeIndex);
        PoolFormat.SealHeader(header, HeaderBytes);
        file.WriteAt(0, header);

        var writer = new ChecksummedWriter(file, HeaderBytes);
        var rec = new byte[16];
        var nh = new byte[NodeHeaderBytes + PoolHeader.MaxNameBytes];
        foreach (var node in nodes)
        {
            int nameBytes = PoolFormat.StrictUtf8.GetByteCount(node.Name);
            nh[0] = (byte)node.Kind;
            BinaryPrimitives.WriteUInt32LittleEndian(nh.AsSpan(1), node.Index);
            BinaryPrimitives.WriteUInt32LittleEndian(nh.AsSpan(5), node.OwnerIndex);
            BinaryPrimitives.WriteUInt32LittleEndian(nh.AsSpan(9), node.ParentIndex ?? NoParent);
            BinaryPrimitives.WriteInt64LittleEndian(nh.AsSpan(13), node.SizeBytes);
            BinaryPrimitives.WriteInt64LittleEndian(nh.AsSpan(21), node.CreatedAt.ToUnixTimeMilliseconds());
            BinaryPrimitives.WriteUInt16LittleEndian(nh.AsSpan(29), (ushort)nameBytes);
            PoolFormat.StrictUtf8.GetBytes(node.Name, nh.AsSpan(NodeHeaderBytes));
            writer.Write(nh.AsSpan(0, NodeHeaderBytes + nameBytes));
            Lineage.ForEachDifference(node.Map, node.ParentMap, (block, entry, _) =>
            {
                BinaryPrimitives.WriteInt64LittleEndian(rec, block);
                BinaryPrimitives.WriteUInt64LittleEndian(rec.AsSpan(8), entry);
                writer.Write(rec);
            });
            BinaryPrimitives.WriteInt64LittleEndian(rec, EndOfMap);
            BinaryPrimitives.WriteUInt64LittleEndian(rec.AsSpan(8), 0);
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
        ushort version = PoolFormat.CheckHeader(header, Magic, "checkpoint", location);
        image.OldestVersionRead = Math.Min(image.OldestVersionRead, version);
        VerifyBody(file, image); // before applying anything: a damaged checkpoint is refused, never half-loaded
        if (new Guid(header[32..48]) != poolId)
        {
            throw image.Corrupt("checkpoint belongs to another pool");
        }
        int count = BinaryPrimitives.ReadInt32LittleEndian(header[20..]);
        image.Generation = BinaryPrimitives.ReadUInt64LittleEndian(header[24..]);
        image.NextVolumeIndex = BinaryPrimitives.ReadUInt32LittleEndian(header[48..]);
        var reader = new ChecksummedReader(file, HeaderBytes, image);
        for (int i = 0; i < count; i++)
        {
            var node = version == 1 ? ReadV1Volume(reader, image) : ReadNode(reader, image);
            ReadEntries(reader, image, node);
        }
        reader.VerifyTrailer();
        foreach (var s in image.Snapshots.Values)
        {
            if (!s.Hidden && !image.Volumes.ContainsKey(s.OwnerIndex!.Value))
            {
                throw image.Corrupt($"snapshot '{s.Id}' belongs to volume {s.OwnerIndex}, which does not exist");
            }
        }
    }

    private static VolumeImage ReadV1Volume(ChecksummedReader reader, PoolImage image)
    {
        Span<byte> vh = stackalloc byte[V1VolumeHeaderBytes];
        reader.Read(vh);
        uint index = BinaryPrimitives.ReadUInt32LittleEndian(vh);
        long size = BinaryPrimitives.ReadInt64LittleEndian(vh[4..]);
        string id = ReadName(reader, image, BinaryPrimitives.ReadUInt16LittleEndian(vh[20..]), size);
        image.Create(index, id, size, DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(vh[12..])));
        return image.Volumes[index];
    }

    private static VolumeImage ReadNode(ChecksummedReader reader, PoolImage image)
    {
        Span<byte> nh = stackalloc byte[NodeHeaderBytes];
        reader.Read(nh);
        var kind = (CheckpointNodeKind)nh[0];
        bool isSnapshot = kind != CheckpointNodeKind.Volume;
        uint index = BinaryPrimitives.ReadUInt32LittleEndian(nh[1..]);
        uint owner = BinaryPrimitives.ReadUInt32LittleEndian(nh[5..]);
        uint parentIndex = BinaryPrimitives.ReadUInt32LittleEndian(nh[9..]);
        long size = BinaryPrimitives.ReadInt64LittleEndian(nh[13..]);
        var createdAt = DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(nh[21..]));
        string name = ReadName(reader, image, BinaryPrimitives.ReadUInt16LittleEndian(nh[29..]), size);
        VolumeImage? parent = null;
        if (parentIndex != NoParent && !image.Snapshots.TryGetValue(parentIndex, out parent))
        {
            throw image.Corrupt($"map '{name}' names parent {parentIndex}, which comes later or does not exist");
        }
        var map = parent?.Map.Fork() ?? new ExtentMap(0);
        map.Grow(VolumeImage.BlocksFor(size));
        var node = new VolumeImage(index, name, size, createdAt, map) { Parent = parent, OwnerIndex = isSnapshot ? owner : null, Hidden = kind == CheckpointNodeKind.HiddenSnapshot };
        if (isSnapshot)
        {
            image.Snapshots[index] = node;
        }
        else
        {
            image.Volumes[index] = node;
        }
        return node;
    }

    private static string ReadName(ChecksummedReader reader, PoolImage image, int nameBytes, long size)
    {
        if (nameBytes > PoolHeader.MaxNameBytes || size < 0)
        {
            throw image.Corrupt("checkpoint map record");
        }
        Span<byte> name = stackalloc byte[nameBytes];
        reader.Read(name);
        return PoolFormat.StrictUtf8.GetString(name);
    }

    private static void ReadEntries(ChecksummedReader reader, PoolImage image, VolumeImage node)
    {
        Span<byte> rec = stackalloc byte[16];
        while (true)
        {
            reader.Read(rec);
            long block = BinaryPrimitives.ReadInt64LittleEndian(rec);
            if (block == EndOfMap)
            {
                return;
            }
            image.SetEntry(node, block, BinaryPrimitives.ReadUInt64LittleEndian(rec[8..]));
        }
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

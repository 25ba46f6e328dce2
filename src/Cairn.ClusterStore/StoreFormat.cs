using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Cairn.Core;

namespace Cairn.ClusterStore;

/// <summary>
/// On-disk format of the embedded store. Both files start with a 16-byte header
/// (8-byte magic, u16 version, u16 min compatible version, 4 reserved bytes) followed by framed
/// records: u32 payload length, u32 CRC32C of the payload, payload. All integers little-endian.
/// The log holds one record per committed transaction (its revision and effective ops);
/// the snapshot holds one record with every live key at a revision.
/// </summary>
internal static class StoreFormat
{
    public const int HeaderBytes = 16;
    public const int FrameHeaderBytes = 8;
    public const ushort Version = 1;
    public const ushort MinCompatibleVersion = 1;
    /// <summary>A control-plane record is small; anything larger is a torn or corrupt length.</summary>
    public const int MaxRecordBytes = 64 << 20;

    public static ReadOnlySpan<byte> LogMagic => "CAIRNLOG"u8;
    public static ReadOnlySpan<byte> SnapshotMagic => "CAIRNSNP"u8;

    private const byte OpPut = 1;
    private const byte OpDelete = 2;

    public static byte[] Header(ReadOnlySpan<byte> magic)
    {
        var header = new byte[HeaderBytes];
        magic.CopyTo(header);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8), Version);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(10), MinCompatibleVersion);
        return header;
    }

    /// <summary>Checks a file header; throws with a reason naming the file when it is not ours or too new.</summary>
    public static void CheckHeader(ReadOnlySpan<byte> header, ReadOnlySpan<byte> magic, string path)
    {
        if (header.Length < HeaderBytes || !header[..8].SequenceEqual(magic))
        {
            throw new InvalidDataException($"{path} is not a Cairn cluster store file (bad magic)");
        }
        ushort minCompatible = BinaryPrimitives.ReadUInt16LittleEndian(header[10..]);
        if (minCompatible > Version)
        {
            throw new InvalidDataException($"{path} needs format version {minCompatible}; this build reads version {Version}");
        }
    }

    public static byte[] Frame(ReadOnlySpan<byte> payload)
    {
        var frame = new byte[FrameHeaderBytes + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4), Crc32C.Compute(payload));
        payload.CopyTo(frame.AsSpan(FrameHeaderBytes));
        return frame;
    }

    /// <summary>Reads the frame at <paramref name="offset"/>; false when it is incomplete or fails its checksum (a torn tail).</summary>
    public static bool TryReadFrame(ReadOnlySpan<byte> data, int offset, out ReadOnlySpan<byte> payload, out int next)
    {
        payload = default;
        next = offset;
        if (data.Length - offset < FrameHeaderBytes)
        {
            return false;
        }
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(data[offset..]);
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(data[(offset + 4)..]);
        if (length > MaxRecordBytes || length > data.Length - offset - FrameHeaderBytes)
        {
            return false;
        }
        var candidate = data.Slice(offset + FrameHeaderBytes, (int)length);
        if (Crc32C.Compute(candidate) != crc)
        {
            return false;
        }
        payload = candidate;
        next = offset + FrameHeaderBytes + (int)length;
        return true;
    }

    public static byte[] EncodeTransaction(long revision, IReadOnlyList<TxnOp> ops)
    {
        var w = new Writer();
        w.I64(revision);
        w.I32(ops.Count);
        foreach (var op in ops)
        {
            switch (op)
            {
                case PutOp put:
                    w.U8(OpPut);
                    w.Str(put.Key);
                    w.Bytes(put.Value);
                    w.I64(put.LeaseId);
                    break;
                case DeleteOp delete:
                    w.U8(OpDelete);
                    w.Str(delete.Key);
                    break;
                default:
                    throw new ArgumentException($"unknown op {op.GetType().Name}", nameof(ops));
            }
        }
        return w.ToArray();
    }

    public static (long Revision, List<TxnOp> Ops) DecodeTransaction(ReadOnlySpan<byte> payload)
    {
        var r = new Reader(payload);
        long revision = r.I64();
        int count = r.I32();
        var ops = new List<TxnOp>(count);
        for (int i = 0; i < count; i++)
        {
            byte kind = r.U8();
            string key = r.Str();
            ops.Add(kind switch
            {
                OpPut => new PutOp(key, r.Bytes(), r.I64()),
                OpDelete => new DeleteOp(key),
                _ => throw new InvalidDataException($"unknown log op kind {kind}"),
            });
        }
        return (revision, ops);
    }

    public static byte[] EncodeSnapshot(long revision, IEnumerable<KeyValue> items, int count)
    {
        var w = new Writer();
        w.I64(revision);
        w.I32(count);
        foreach (var kv in items)
        {
            w.Str(kv.Key);
            w.Bytes(kv.Value);
            w.I64(kv.CreateRevision);
            w.I64(kv.ModRevision);
            w.I64(kv.Version);
            w.I64(kv.LeaseId);
        }
        return w.ToArray();
    }

    public static (long Revision, List<KeyValue> Items) DecodeSnapshot(ReadOnlySpan<byte> payload)
    {
        var r = new Reader(payload);
        long revision = r.I64();
        int count = r.I32();
        var items = new List<KeyValue>(count);
        for (int i = 0; i < count; i++)
        {
            items.Add(new KeyValue(r.Str(), r.Bytes(), r.I64(), r.I64(), r.I64(), r.I64()));
        }
        return (revision, items);
    }

    private sealed class Writer
    {
        private readonly ArrayBufferWriter<byte> _stream = new();
        private readonly byte[] _scratch = new byte[8];

        public void U8(byte value) => _stream.Write([value]);

        public void I32(int value)
        {
            BinaryPrimitives.WriteInt32LittleEndian(_scratch, value);
            _stream.Write(_scratch.AsSpan(0, 4));
        }

        public void I64(long value)
        {
            BinaryPrimitives.WriteInt64LittleEndian(_scratch, value);
            _stream.Write(_scratch.AsSpan(0, 8));
        }

        public void Bytes(ReadOnlySpan<byte> value)
        {
            I32(value.Length);
            _stream.Write(value);
        }

        public void Str(string value) => Bytes(Encoding.UTF8.GetBytes(value));

        public byte[] ToArray() => _stream.WrittenSpan.ToArray();
    }

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _offset;

        public byte U8() => Take(1)[0];

        public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));

        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));

        public byte[] Bytes()
        {
            int length = I32();
            if (length < 0)
            {
                throw new InvalidDataException("negative length in cluster store record");
            }
            return Take(length).ToArray();
        }

        public string Str() => Encoding.UTF8.GetString(Bytes());

        private ReadOnlySpan<byte> Take(int count)
        {
            if (count > _data.Length - _offset)
            {
                throw new InvalidDataException("cluster store record ends early");
            }
            var span = _data.Slice(_offset, count);
            _offset += count;
            return span;
        }
    }
}

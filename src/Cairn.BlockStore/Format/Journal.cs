using System.Buffers.Binary;
using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore.Format;

/// <summary>Journal record types (1–6 since format v1, 7–10 since v2). Every record sets state, so replay is idempotent.</summary>
internal enum JournalRecord : byte
{
    /// <summary>vol u32, block u64, physical+1 u32, crc u32 — 21 bytes.</summary>
    Map = 1,
    /// <summary>vol u32, block u64, count u64 — the range becomes holes.</summary>
    Trim = 2,
    /// <summary>vol u32, block u64, count u64 — the range becomes allocated zeros.</summary>
    Zero = 3,
    /// <summary>vol u32, size u64, createdUnixMs i64, idLength u16, id UTF-8.</summary>
    CreateVolume = 4,
    /// <summary>vol u32.</summary>
    DeleteVolume = 5,
    /// <summary>vol u32, size u64.</summary>
    GrowVolume = 6,
    /// <summary>vol u32, snapshot u32, createdUnixMs i64, nameLength u16, name UTF-8: the volume's live map, frozen.</summary>
    CreateSnapshot = 7,
    /// <summary>snapshot u32: its children hang below its parent from here on.</summary>
    DeleteSnapshot = 8,
    /// <summary>vol u32, snapshot u32, size u64, createdUnixMs i64, idLength u16, id UTF-8: a new volume showing the snapshot.</summary>
    CloneVolume = 9,
    /// <summary>vol u32, snapshot u32: the volume's live map becomes the snapshot's again.</summary>
    RevertVolume = 10,
}

/// <summary>
/// An in-memory batch of journal records, written to the journal as one unit at a sync point:
/// header magic "CJB1"(4) payloadBytes(4) sequence(8) recordCount(4) crc32c(4) of header[0..20)+payload, then payload.
/// A torn batch fails its CRC and is dropped with everything after it.
/// </summary>
internal sealed class JournalBatch
{
    public const int HeaderBytes = 24;
    public const uint Magic = 0x31424A43; // "CJB1"

    private byte[] _buffer = new byte[64 * 1024];
    private int _length = HeaderBytes;

    /// <summary>
    /// Physical blocks this batch's records stop referencing because they were overwritten; free once the batch is durable
    /// and readers drained, and kept in the data file (reused while their pages are still cached).
    /// </summary>
    public List<uint> Frees { get; } = [];

    /// <summary>Like <see cref="Frees"/>, but space the user gave back (TRIM, WRITE_ZEROES without NoHole, delete): punched when freed.</summary>
    public List<uint> Discards { get; } = [];

    public int RecordCount { get; private set; }

    public int FreeCount => Frees.Count + Discards.Count;

    public int PayloadBytes => _length - HeaderBytes;

    public void Reset()
    {
        _length = HeaderBytes;
        RecordCount = 0;
        Frees.Clear();
        Discards.Clear();
    }

    public void AddMap(uint volume, long block, ulong entry)
    {
        var f = Record(JournalRecord.Map, volume, 16);
        BinaryPrimitives.WriteInt64LittleEndian(f, block);
        BinaryPrimitives.WriteUInt64LittleEndian(f[8..], entry); // physical+1 then crc, both little-endian
    }

    public void AddRange(JournalRecord kind, uint volume, long block, long count)
    {
        var f = Record(kind, volume, 16);
        BinaryPrimitives.WriteInt64LittleEndian(f, block);
        BinaryPrimitives.WriteInt64LittleEndian(f[8..], count);
    }

    public void AddCreate(uint volume, string id, long sizeBytes, DateTimeOffset createdAt)
    {
        var f = Record(JournalRecord.CreateVolume, volume, 16, id);
        BinaryPrimitives.WriteInt64LittleEndian(f, sizeBytes);
        BinaryPrimitives.WriteInt64LittleEndian(f[8..], createdAt.ToUnixTimeMilliseconds());
    }

    public void AddDelete(uint volume) => Record(JournalRecord.DeleteVolume, volume, 0);

    public void AddGrow(uint volume, long sizeBytes) => BinaryPrimitives.WriteInt64LittleEndian(Record(JournalRecord.GrowVolume, volume, 8), sizeBytes);

    public void AddSnapshot(uint volume, uint snapshot, string name, DateTimeOffset createdAt)
    {
        var f = Record(JournalRecord.CreateSnapshot, volume, 12, name);
        BinaryPrimitives.WriteUInt32LittleEndian(f, snapshot);
        BinaryPrimitives.WriteInt64LittleEndian(f[4..], createdAt.ToUnixTimeMilliseconds());
    }

    public void AddDeleteSnapshot(uint snapshot) => Record(JournalRecord.DeleteSnapshot, snapshot, 0);

    public void AddClone(uint volume, uint snapshot, string id, long sizeBytes, DateTimeOffset createdAt)
    {
        var f = Record(JournalRecord.CloneVolume, volume, 20, id);
        BinaryPrimitives.WriteUInt32LittleEndian(f, snapshot);
        BinaryPrimitives.WriteInt64LittleEndian(f[4..], sizeBytes);
        BinaryPrimitives.WriteInt64LittleEndian(f[12..], createdAt.ToUnixTimeMilliseconds());
    }

    public void AddRevert(uint volume, uint snapshot) => BinaryPrimitives.WriteUInt32LittleEndian(Record(JournalRecord.RevertVolume, volume, 4), snapshot);

    /// <summary>
    /// Reserves one record: kind u8, map index u32, then <paramref name="fieldBytes"/> of fields the caller fills in
    /// (the returned span), then, when given, <paramref name="name"/> as length u16 + UTF-8.
    /// </summary>
    private Span<byte> Record(JournalRecord kind, uint index, int fieldBytes, string? name = null)
    {
        int nameBytes = name is null ? 0 : PoolFormat.StrictUtf8.GetByteCount(name);
        var s = Reserve(5 + fieldBytes + (name is null ? 0 : 2 + nameBytes));
        s[0] = (byte)kind;
        BinaryPrimitives.WriteUInt32LittleEndian(s[1..], index);
        if (name is not null)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(s[(5 + fieldBytes)..], (ushort)nameBytes);
            PoolFormat.StrictUtf8.GetBytes(name, s[(7 + fieldBytes)..]);
        }
        return s.Slice(5, fieldBytes);
    }

    /// <summary>Appends another batch's records and frees after this one's (used to put back a batch whose write failed).</summary>
    public void Append(JournalBatch later)
    {
        later._buffer.AsSpan(HeaderBytes, later.PayloadBytes).CopyTo(Reserve(later.PayloadBytes));
        RecordCount += later.RecordCount - 1;
        Frees.AddRange(later.Frees);
        Discards.AddRange(later.Discards);
    }

    /// <summary>Fills in the header for <paramref name="sequence"/> and returns the bytes to append to the journal.</summary>
    public ReadOnlySpan<byte> Seal(ulong sequence)
    {
        var s = _buffer.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(s[4..], PayloadBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], sequence);
        BinaryPrimitives.WriteInt32LittleEndian(s[16..], RecordCount);
        uint crc = Crc32C.Append(~0u, s[..20]);
        crc = ~Crc32C.Append(crc, s.Slice(HeaderBytes, PayloadBytes));
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], crc);
        return s[.._length];
    }

    private Span<byte> Reserve(int bytes)
    {
        if (_length + bytes > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + bytes));
        }
        var span = _buffer.AsSpan(_length, bytes);
        _length += bytes;
        RecordCount++;
        return span;
    }
}

/// <summary>
/// Journal file, one per checkpoint generation (journal-NNNNNNNNNN.cairn): a 64-byte header
/// magic "CAIRNJNL"(8) version(2) minCompat(2) headerBytes=64(4) blockBytes(4) reserved(4) generation(8) poolId(16) zeros crc32c(4),
/// then batches with sequence numbers 1, 2, 3... The first batch that is torn, out of sequence or fails its CRC ends the journal.
/// </summary>
internal static class JournalFile
{
    public const int HeaderBytes = PoolFormat.CommonHeaderBytes;
    public static ReadOnlySpan<byte> Magic => "CAIRNJNL"u8;

    public static void WriteHeader(IStorageFile file, ulong generation, Guid poolId)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        header.Clear();
        PoolFormat.WriteCommonHeader(header, Magic, HeaderBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], PoolFormat.BlockBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(header[24..], generation);
        poolId.TryWriteBytes(header[32..48]);
        PoolFormat.SealHeader(header, HeaderBytes);
        file.WriteAt(0, header);
    }

    /// <summary>Replays a journal into <paramref name="image"/>; returns the byte offset where valid batches end and the last sequence.</summary>
    public static (long EndOffset, ulong LastSequence) Replay(IStorageFile file, ulong generation, Guid poolId, PoolImage image, string location)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        if (file.ReadAt(0, header) < HeaderBytes || !header.ContainsAnyExcept((byte)0))
        {
            // Created but its header never reached the disk before a crash: nothing in it was ever acknowledged.
            return (-1, 0);
        }
        image.OldestVersionRead = Math.Min(image.OldestVersionRead, PoolFormat.CheckHeader(header, Magic, "journal", location));
        if (BinaryPrimitives.ReadUInt64LittleEndian(header[24..]) != generation || new Guid(header[32..48]) != poolId)
        {
            throw image.Corrupt($"journal generation/pool id does not match checkpoint generation {generation}");
        }
        long offset = HeaderBytes;
        ulong sequence = 0;
        long length = file.Length;
        Span<byte> batchHeader = stackalloc byte[JournalBatch.HeaderBytes];
        byte[] payload = [];
        while (offset + JournalBatch.HeaderBytes <= length)
        {
            file.ReadAt(offset, batchHeader);
            int payloadBytes = BinaryPrimitives.ReadInt32LittleEndian(batchHeader[4..]);
            if (BinaryPrimitives.ReadUInt32LittleEndian(batchHeader) != JournalBatch.Magic
                || BinaryPrimitives.ReadUInt64LittleEndian(batchHeader[8..]) != sequence + 1
                || payloadBytes < 0 || offset + JournalBatch.HeaderBytes + payloadBytes > length)
            {
                break;
            }
            if (payload.Length < payloadBytes)
            {
                payload = new byte[Math.Max(payloadBytes, payload.Length * 2)];
            }
            var body = payload.AsSpan(0, payloadBytes);
            file.ReadAt(offset + JournalBatch.HeaderBytes, body);
            uint crc = ~Crc32C.Append(Crc32C.Append(~0u, batchHeader[..20]), body);
            if (crc != BinaryPrimitives.ReadUInt32LittleEndian(batchHeader[20..]))
            {
                break;
            }
            ApplyRecords(body, BinaryPrimitives.ReadInt32LittleEndian(batchHeader[16..]), image);
            sequence++;
            offset += JournalBatch.HeaderBytes + payloadBytes;
        }
        return (offset, sequence);
    }

    private static void ApplyRecords(ReadOnlySpan<byte> body, int count, PoolImage image)
    {
        int pos = 0;
        for (int i = 0; i < count; i++)
        {
            if (pos + 5 > body.Length)
            {
                throw image.Corrupt("journal batch shorter than its record count");
            }
            var kind = (JournalRecord)body[pos];
            uint vol = BinaryPrimitives.ReadUInt32LittleEndian(body[(pos + 1)..]);
            var r = body[(pos + 5)..];
            switch (kind)
            {
                case JournalRecord.Map:
                    image.Set(vol, BinaryPrimitives.ReadInt64LittleEndian(r), BinaryPrimitives.ReadUInt64LittleEndian(r[8..]));
                    pos += 21;
                    break;
                case JournalRecord.Trim:
                case JournalRecord.Zero:
                    image.SetRange(vol, BinaryPrimitives.ReadInt64LittleEndian(r), BinaryPrimitives.ReadInt64LittleEndian(r[8..]),
                        kind == JournalRecord.Zero ? ExtentMap.ZeroEntry : 0);
                    pos += 21;
                    break;
                case JournalRecord.CreateVolume:
                    int idBytes = BinaryPrimitives.ReadUInt16LittleEndian(r[16..]);
                    image.Create(vol, PoolFormat.StrictUtf8.GetString(r.Slice(18, idBytes)), BinaryPrimitives.ReadInt64LittleEndian(r),
                        DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(r[8..])));
                    pos += 23 + idBytes;
                    break;
                case JournalRecord.DeleteVolume:
                    image.Delete(vol);
                    pos += 5;
                    break;
                case JournalRecord.GrowVolume:
                    image.Grow(vol, BinaryPrimitives.ReadInt64LittleEndian(r));
                    pos += 13;
                    break;
                default:
                    pos += ApplyLineageRecord(kind, vol, r, image);
                    break;
            }
        }
    }

    /// <summary>Records of format v2 (snapshots, clones, reverts); returns the record's length.</summary>
    private static int ApplyLineageRecord(JournalRecord kind, uint vol, ReadOnlySpan<byte> r, PoolImage image)
    {
        switch (kind)
        {
            case JournalRecord.CreateSnapshot:
                int nameBytes = BinaryPrimitives.ReadUInt16LittleEndian(r[12..]);
                image.CreateSnapshot(vol, BinaryPrimitives.ReadUInt32LittleEndian(r), PoolFormat.StrictUtf8.GetString(r.Slice(14, nameBytes)),
                    DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(r[4..])));
                return 19 + nameBytes;
            case JournalRecord.DeleteSnapshot:
                image.DeleteSnapshot(vol);
                return 5;
            case JournalRecord.CloneVolume:
                int idBytes = BinaryPrimitives.ReadUInt16LittleEndian(r[20..]);
                image.Clone(vol, BinaryPrimitives.ReadUInt32LittleEndian(r), PoolFormat.StrictUtf8.GetString(r.Slice(22, idBytes)),
                    BinaryPrimitives.ReadInt64LittleEndian(r[4..]), DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(r[12..])));
                return 27 + idBytes;
            case JournalRecord.RevertVolume:
                image.Revert(vol, BinaryPrimitives.ReadUInt32LittleEndian(r));
                return 9;
            default:
                throw image.Corrupt($"unknown journal record type {(byte)kind}");
        }
    }
}

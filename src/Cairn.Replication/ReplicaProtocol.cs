using System.Buffers.Binary;

namespace Cairn.Replication;

/// <summary>What a replica request asks for.</summary>
public enum ReplicaOp : ushort
{
    Read = 1,
    Write = 2,
    Flush = 3,
    Trim = 4,
    WriteZeroes = 5,
    /// <summary>Grows the replica's volume to offset bytes (no payload).</summary>
    Grow = 6,
    /// <summary>Snapshots the replica's volume; the payload is the snapshot's name (UTF-8, 1-255 bytes).</summary>
    CreateSnapshot = 7,
    /// <summary>Deletes a snapshot of the replica's volume; the payload is its name (UTF-8, 1-255 bytes).</summary>
    DeleteSnapshot = 8,
    /// <summary>Deletes every snapshot of the replica's volume (no payload): a full rebuild starts from none and copies the owner's.</summary>
    DeleteAllSnapshots = 9,
    /// <summary>Reverts the replica's volume to one of its snapshots; the payload is the snapshot's name (UTF-8, 1-255 bytes).</summary>
    RevertToSnapshot = 10,
    /// <summary>
    /// Checks the replica's copy of a range against its checksums without sending the data (a scrub of the replica,
    /// driven by the owner): offset 4 KiB aligned, length at most <see cref="ReplicaProtocol.MaxVerifyBytes"/>. A
    /// successful reply carries <see cref="ReplicaProtocol.VerifyReplyBytes"/> bytes: a little-endian u64 whose bit i
    /// is set when the range's i-th 4 KiB block failed to read (checksum mismatch or media error).
    /// </summary>
    Verify = 11,
    /// <summary>
    /// Reads one 4 KiB block of one of the replica's snapshots (the owner repairing its own copy of that snapshot):
    /// offset 4 KiB aligned; the payload is the snapshot's name (UTF-8, 1-255 bytes), so length is the name's. A
    /// successful reply carries <see cref="ReplicaProtocol.SnapshotBlockBytes"/> bytes, zeros past the snapshot's end;
    /// a block that fails its checksum answers <see cref="ReplicaStatus.Io"/>, an unknown snapshot <see cref="ReplicaStatus.InvalidArgument"/>.
    /// </summary>
    ReadSnapshotBlock = 12,
    /// <summary>
    /// Checks the replica's copy of one of its snapshots against its checksums without sending the data (the owner's
    /// scrub of the replicas' snapshots): the <see cref="ReplicaProtocol.MaxVerifyBytes"/> from offset (4 KiB aligned;
    /// blocks past the snapshot's end count as good); the payload is the snapshot's name (UTF-8, 1-255 bytes), so
    /// length is the name's. A successful reply carries the same bitmap as <see cref="Verify"/>'s; an unknown snapshot
    /// answers <see cref="ReplicaStatus.InvalidArgument"/>.
    /// </summary>
    VerifySnapshot = 13,
    /// <summary>
    /// Mends one 4 KiB block of one of the replica's snapshots in place, durably, with the owner's good copy, and only
    /// if that copy is exactly what the block's checksum expects: offset 4 KiB aligned; the payload is the snapshot's
    /// name (UTF-8, 1-255 bytes) followed by the <see cref="ReplicaProtocol.SnapshotBlockBytes"/> of the block, and
    /// length is their sum. A successful reply carries one byte, the <see cref="SnapshotRewriteOutcome"/>.
    /// </summary>
    RewriteSnapshotBlock = 14,
}

/// <summary>A replica's answer. Everything but <see cref="Ok"/> is a failure of that one request.</summary>
public enum ReplicaStatus : uint
{
    Ok = 0,
    /// <summary>The request carried an older epoch than the replica has seen: its sender is no longer the owner.</summary>
    StaleEpoch = 1,
    Io = 2,
    NoSpace = 3,
    InvalidArgument = 4,
    ReadOnly = 5,
    NotSupported = 6,
    /// <summary>The replica is closed or deleted.</summary>
    Shutdown = 7,
}

[Flags]
public enum ReplicaFlags : ushort
{
    None = 0,
    /// <summary>Write: durable before the reply (FUA).</summary>
    ForceUnitAccess = 1,
    /// <summary>WriteZeroes: the range must read as zeros and stay allocated.</summary>
    NoHole = 2,
    /// <summary>
    /// Write only: cold data, a rebuild's copy. The replica writes it past its page cache (<see cref="Cairn.Core.WriteFlags.Uncached"/>),
    /// so a rebuild neither pays the cache's copy and writeback nor evicts what is read there. Durable like any write.
    /// </summary>
    Uncached = 4,
}

/// <summary>
/// The replica protocol's frames: small, fixed-size, little-endian headers, so encoding and decoding touch no heap.
/// A connection starts with a hello (client → server) naming the replica and the sender's epoch, answered by a hello
/// reply; then requests flow, pipelined, each answered by a reply carrying its sequence number, in any order.
/// <code>
/// hello        magic u32 "CRHL" | version u16 | name length u16 | epoch u64 | name (UTF-8, ≤ 255 bytes)
/// hello reply  magic u32 "CRHR" | status u32 | epoch u64 (the replica's) | size u64 (bytes)
/// request      magic u32 "CRRQ" | op u16 | flags u16 | epoch u64 | sequence u64 | offset u64 | length u32 | payload (writes, snapshot names)
/// reply        magic u32 "CRRP" | status u32 | sequence u64 | payload (reads that succeeded: length bytes; verifies: 8 bytes;
///                                                            snapshot block reads: 4096 bytes)
/// </code>
/// A snapshot block read (op 12) carries the snapshot's name as its payload, like create-snapshot, and reads the one
/// 4 KiB block at offset: its length is the name's, and its reply's payload is always one block.
/// Request flags: FUA (writes, trims, write-zeroes: durable before the reply), NO_HOLE (write-zeroes: stays allocated),
/// UNCACHED (writes only, set by a rebuild's copier: cold data, written past the replica's page cache). A flag this node
/// does not know, or UNCACHED on anything but a write, is a protocol error.
/// </summary>
public static class ReplicaProtocol
{
    public const ushort Version = 1;
    public const uint HelloMagic = 0x4C485243;      // "CRHL"
    public const uint HelloReplyMagic = 0x52485243; // "CRHR"
    public const uint RequestMagic = 0x51525243;    // "CRRQ"
    public const uint ReplyMagic = 0x50525243;      // "CRRP"

    public const int HelloHeaderSize = 16;
    public const int HelloReplySize = 24;
    public const int RequestHeaderSize = 36;
    public const int ReplyHeaderSize = 16;
    public const int MaxNameBytes = 255;

    /// <summary>The largest payload one request may carry; a larger length is a protocol error that closes the connection.</summary>
    public const int MaxPayloadBytes = 8 << 20;

    /// <summary>The largest range a trim or write-zeroes may cover (they carry no payload).</summary>
    public const long MaxRangeBytes = 1L << 40;

    /// <summary>The unit a verify reports on: the block store's checksummed block.</summary>
    public const int VerifyBlockBytes = 4096;

    /// <summary>The largest range one verify covers: one bit per block of a u64. Small, since the replica answers it as a whole and writes overlapping it wait while it runs.</summary>
    public const int MaxVerifyBytes = 64 * VerifyBlockBytes;

    /// <summary>The payload of a successful verify's reply: the bitmap of bad blocks.</summary>
    public const int VerifyReplyBytes = sizeof(ulong);

    /// <summary>What a snapshot block read covers and answers: one checksummed block.</summary>
    public const int SnapshotBlockBytes = VerifyBlockBytes;

    /// <summary>How many payload bytes follow a successful reply to <paramref name="op"/> over <paramref name="length"/> bytes.</summary>
    public static int ReplyPayloadBytes(ReplicaOp op, uint length) => op switch
    {
        ReplicaOp.Read => (int)length,
        ReplicaOp.Verify => VerifyReplyBytes,
        ReplicaOp.ReadSnapshotBlock => SnapshotBlockBytes,
        ReplicaOp.VerifySnapshot => VerifyReplyBytes,
        ReplicaOp.RewriteSnapshotBlock => RewriteReplyBytes,
        _ => 0,
    };

    /// <summary>The payload of a successful snapshot block rewrite's reply: its <see cref="SnapshotRewriteOutcome"/>.</summary>
    public const int RewriteReplyBytes = 1;

    /// <summary>The snapshot name's bytes in a request's payload (all of it but a rewrite's block).</summary>
    public static int NameBytes(in ReplicaRequest request) =>
        request.Op == ReplicaOp.RewriteSnapshotBlock ? (int)request.Length - SnapshotBlockBytes : (int)request.Length;
}

/// <summary>A request header, decoded. <see cref="Length"/> is the payload size for writes and the range for the rest.</summary>
public readonly record struct ReplicaRequest(ReplicaOp Op, ReplicaFlags Flags, ulong Epoch, ulong Sequence, long Offset, uint Length)
{
    public bool CarriesPayload => OpCarriesPayload(Op);

    /// <summary>Whether a request of <paramref name="op"/> is followed by <see cref="Length"/> bytes of payload.</summary>
    public static bool OpCarriesPayload(ReplicaOp op) => op is ReplicaOp.Write || CarriesName(op);

    /// <summary>Whether the payload of <paramref name="op"/> is a snapshot's name.</summary>
    public static bool CarriesName(ReplicaOp op) => op is ReplicaOp.CreateSnapshot or ReplicaOp.DeleteSnapshot or ReplicaOp.RevertToSnapshot
        or ReplicaOp.ReadSnapshotBlock or ReplicaOp.VerifySnapshot or ReplicaOp.RewriteSnapshotBlock;

    /// <summary>The bytes of the volume (or snapshot) the request touches from its offset: <see cref="Length"/>, but for the
    /// snapshot block ops, whose length is their payload's, the block or the verify window.</summary>
    public long RangeBytes => Op switch
    {
        ReplicaOp.ReadSnapshotBlock or ReplicaOp.RewriteSnapshotBlock => ReplicaProtocol.SnapshotBlockBytes,
        ReplicaOp.VerifySnapshot => ReplicaProtocol.MaxVerifyBytes,
        _ => Length,
    };

    public void Encode(Span<byte> header)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(header, ReplicaProtocol.RequestMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], (ushort)Op);
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], (ushort)Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], Epoch);
        BinaryPrimitives.WriteUInt64LittleEndian(header[16..], Sequence);
        BinaryPrimitives.WriteInt64LittleEndian(header[24..], Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(header[32..], Length);
    }

    private static string SnapshotOpName(ReplicaOp op) => op switch
    {
        ReplicaOp.ReadSnapshotBlock => "snapshot block read",
        ReplicaOp.VerifySnapshot => "snapshot verify",
        _ => "snapshot block rewrite",
    };

    /// <summary>Decodes and checks a header; a bad one is a protocol error (the connection closes), described in <paramref name="error"/>.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> header, out ReplicaRequest request, out string error)
    {
        request = default;
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(header);
        if (magic != ReplicaProtocol.RequestMagic)
        {
            error = $"bad request magic 0x{magic:x8}";
            return false;
        }
        var op = (ReplicaOp)BinaryPrimitives.ReadUInt16LittleEndian(header[4..]);
        var flags = (ReplicaFlags)BinaryPrimitives.ReadUInt16LittleEndian(header[6..]);
        long offset = BinaryPrimitives.ReadInt64LittleEndian(header[24..]);
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(header[32..]);
        request = new ReplicaRequest(op, flags, BinaryPrimitives.ReadUInt64LittleEndian(header[8..]), BinaryPrimitives.ReadUInt64LittleEndian(header[16..]), offset, length);
        error = op switch
        {
            < ReplicaOp.Read or > ReplicaOp.RewriteSnapshotBlock => $"unknown op {(ushort)op}",
            _ when (flags & ~(ReplicaFlags.ForceUnitAccess | ReplicaFlags.NoHole | ReplicaFlags.Uncached)) != 0 => $"unknown flags 0x{(ushort)flags:x4}",
            not ReplicaOp.Write when (flags & ReplicaFlags.Uncached) != 0 => $"flag UNCACHED on a {op} request (only writes carry it)",
            _ when offset < 0 => $"negative offset {offset}",
            ReplicaOp.Read or ReplicaOp.Write when length > ReplicaProtocol.MaxPayloadBytes => $"length {length} exceeds {ReplicaProtocol.MaxPayloadBytes}",
            ReplicaOp.RewriteSnapshotBlock when length is <= ReplicaProtocol.SnapshotBlockBytes or > ReplicaProtocol.SnapshotBlockBytes + ReplicaProtocol.MaxNameBytes =>
                $"snapshot block rewrite of {length} bytes (a name of 1-{ReplicaProtocol.MaxNameBytes} bytes and a {ReplicaProtocol.SnapshotBlockBytes}-byte block)",
            not ReplicaOp.RewriteSnapshotBlock when CarriesName(op) && length is 0 or > ReplicaProtocol.MaxNameBytes =>
                $"snapshot name of {length} bytes (1-{ReplicaProtocol.MaxNameBytes})",
            ReplicaOp.Grow when length != 0 => $"grow with a payload of {length} bytes (it carries none)",
            ReplicaOp.DeleteAllSnapshots when length != 0 => $"delete-all-snapshots with a payload of {length} bytes (it carries none)",
            ReplicaOp.Verify when length > ReplicaProtocol.MaxVerifyBytes => $"verify of {length} bytes exceeds {ReplicaProtocol.MaxVerifyBytes}",
            ReplicaOp.Verify when offset % ReplicaProtocol.VerifyBlockBytes != 0 => $"verify at offset {offset}, not a multiple of {ReplicaProtocol.VerifyBlockBytes}",
            ReplicaOp.ReadSnapshotBlock or ReplicaOp.VerifySnapshot or ReplicaOp.RewriteSnapshotBlock when offset % ReplicaProtocol.SnapshotBlockBytes != 0 =>
                $"{SnapshotOpName(op)} at offset {offset}, not a multiple of {ReplicaProtocol.SnapshotBlockBytes}",
            _ => "",
        };
        return error.Length == 0;
    }
}

/// <summary>A reply header, decoded.</summary>
public readonly record struct ReplicaReply(ReplicaStatus Status, ulong Sequence)
{
    public void Encode(Span<byte> header)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(header, ReplicaProtocol.ReplyMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], (uint)Status);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], Sequence);
    }

    public static bool TryDecode(ReadOnlySpan<byte> header, out ReplicaReply reply)
    {
        reply = new ReplicaReply((ReplicaStatus)BinaryPrimitives.ReadUInt32LittleEndian(header[4..]), BinaryPrimitives.ReadUInt64LittleEndian(header[8..]));
        return BinaryPrimitives.ReadUInt32LittleEndian(header) == ReplicaProtocol.ReplyMagic;
    }
}

using System.Buffers.Binary;
using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>Why a received frame could not be used.</summary>
internal enum FrameError
{
    None,
    HeaderDigest,
    DataDigest,
}

/// <summary>
/// Frames whole PDUs: BHS, AHS, optional header digest, data segment padded to 4 bytes, optional data digest.
/// Digests are CRC32C sent least significant byte first (RFC 7143 §13.1 and the test vectors of RFC 3720 B.4).
/// </summary>
internal static class PduCodec
{
    /// <summary>Bytes that follow the 48-byte BHS, given the BHS and the digests in force.</summary>
    public static int BytesAfterBhs(ReadOnlySpan<byte> bhs, bool headerDigest, bool dataDigest)
    {
        int data = Bhs.DataSegmentLength(bhs);
        return Bhs.TotalAhsBytes(bhs)
            + (headerDigest ? Bhs.DigestBytes : 0)
            + Bhs.Padded(data)
            + (dataDigest && data > 0 ? Bhs.DigestBytes : 0);
    }

    public static int FrameBytes(int ahsBytes, int dataBytes, bool headerDigest, bool dataDigest) =>
        Bhs.Length + ahsBytes + (headerDigest ? Bhs.DigestBytes : 0) + Bhs.Padded(dataBytes) + (dataDigest && dataBytes > 0 ? Bhs.DigestBytes : 0);

    /// <summary>
    /// Checks the digests of a complete frame and finds its parts: <paramref name="headerBytes"/> covers BHS and AHS,
    /// <paramref name="dataStart"/> and <paramref name="dataBytes"/> locate the unpadded data segment.
    /// </summary>
    public static FrameError Decode(ReadOnlySpan<byte> frame, bool headerDigest, bool dataDigest, out int headerBytes, out int dataStart, out int dataBytes)
    {
        headerBytes = Bhs.Length + Bhs.TotalAhsBytes(frame);
        dataBytes = Bhs.DataSegmentLength(frame);
        dataStart = headerBytes;
        if (headerDigest)
        {
            uint expected = BinaryPrimitives.ReadUInt32LittleEndian(frame[headerBytes..]);
            if (Crc32C.Compute(frame[..headerBytes]) != expected)
            {
                return FrameError.HeaderDigest;
            }
            dataStart += Bhs.DigestBytes;
        }
        if (dataDigest && dataBytes > 0)
        {
            int padded = Bhs.Padded(dataBytes);
            uint expected = BinaryPrimitives.ReadUInt32LittleEndian(frame[(dataStart + padded)..]);
            if (Crc32C.Compute(frame.Slice(dataStart, padded)) != expected)
            {
                return FrameError.DataDigest;
            }
        }
        return FrameError.None;
    }

    /// <summary>
    /// Writes a frame into <paramref name="destination"/> whose first 48 bytes already hold the BHS (AHS are never sent
    /// by this target) and returns its length. The data segment length field is set here.
    /// </summary>
    public static int Encode(Span<byte> destination, ReadOnlySpan<byte> data, bool headerDigest, bool dataDigest)
    {
        destination[4] = 0;
        Bhs.SetDataSegmentLength(destination, data.Length);
        int at = Bhs.Length;
        if (headerDigest)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination[at..], Crc32C.Compute(destination[..Bhs.Length]));
            at += Bhs.DigestBytes;
        }
        if (data.Length == 0)
        {
            return at;
        }
        int dataStart = at;
        data.CopyTo(destination[at..]);
        at += data.Length;
        int padded = Bhs.Padded(data.Length);
        destination[at..(dataStart + padded)].Clear();
        at = dataStart + padded;
        if (dataDigest)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination[at..], Crc32C.Compute(destination.Slice(dataStart, padded)));
            at += Bhs.DigestBytes;
        }
        return at;
    }
}

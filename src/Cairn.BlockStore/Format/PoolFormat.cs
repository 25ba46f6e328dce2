using System.Buffers.Binary;
using System.Text;
using Cairn.Core;

namespace Cairn.BlockStore.Format;

/// <summary>
/// Constants of the on-disk format. Changing any of them is a format change: bump <see cref="Version"/>.
/// v1: volumes only. v2: snapshots, clones and reverts (new journal records, checkpoint stores maps as differences
/// from their parent); a v1 pool is read and upgraded to v2 when opened.
/// </summary>
internal static class PoolFormat
{
    /// <summary>The format this build writes.</summary>
    public const ushort Version = 2;
    /// <summary>The oldest reader that can read what this build writes (v1 readers know neither snapshots nor the v2 checkpoint).</summary>
    public const ushort MinCompatibleVersion = 2;
    /// <summary>The newest format this build can read.</summary>
    public const ushort MaxReadableVersion = 2;

    public const int BlockBytes = 4096;
    public const int BlockShift = 12;

    public const string HeaderFile = "pool.cairn";
    public const string HeaderTempFile = "pool.cairn.tmp";
    public const string DataFile = "data.cairn";
    public const string CheckpointFile = "checkpoint.cairn";
    public const string CheckpointTempFile = "checkpoint.cairn.tmp";
    public const string JournalPrefix = "journal-";
    public const string JournalSuffix = ".cairn";

    public static string JournalFile(ulong generation) => $"{JournalPrefix}{generation:D10}{JournalSuffix}";

    /// <summary>Every file header: magic(8) version(2) minCompat(2) headerBytes(4) ... crc32c in the last 4 bytes.</summary>
    public const int CommonHeaderBytes = 64;

    /// <summary>
    /// Checks magic, checksum and version of a header whose layout starts magic(8) version(2) minCompat(2) headerBytes(4)
    /// and ends with a CRC32C of everything before it; returns the version. Throws <see cref="PoolFormatException"/> with a clear message.
    /// </summary>
    public static ushort CheckHeader(ReadOnlySpan<byte> header, ReadOnlySpan<byte> magic, string what, string location)
    {
        if (header.Length < 16 || !header[..8].SequenceEqual(magic))
        {
            throw new PoolFormatException($"{what} in '{location}' is not a Cairn {what} (bad magic); this is not a Cairn pool or the file is damaged.");
        }
        int headerBytes = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        if (headerBytes < 20 || headerBytes > header.Length)
        {
            throw new PoolFormatException($"{what} in '{location}' is corrupt (header length {headerBytes}).");
        }
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(header[(headerBytes - 4)..]);
        if (Crc32C.Compute(header[..(headerBytes - 4)]) != stored)
        {
            throw new PoolFormatException($"{what} in '{location}' is corrupt (header checksum mismatch); restore the pool from a replica.");
        }
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(header[8..]);
        ushort minCompatible = BinaryPrimitives.ReadUInt16LittleEndian(header[10..]);
        if (minCompatible > MaxReadableVersion)
        {
            throw new PoolFormatException(
                $"{what} in '{location}' uses format version {version}, which needs a reader of version {minCompatible} or newer; " +
                $"this build reads up to version {MaxReadableVersion}. Upgrade Cairn to open this pool.");
        }
        return version;
    }

    public static void WriteCommonHeader(Span<byte> header, ReadOnlySpan<byte> magic, int headerBytes)
    {
        magic.CopyTo(header);
        BinaryPrimitives.WriteUInt16LittleEndian(header[8..], Version);
        BinaryPrimitives.WriteUInt16LittleEndian(header[10..], MinCompatibleVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], headerBytes);
    }

    public static void SealHeader(Span<byte> header, int headerBytes)
        => BinaryPrimitives.WriteUInt32LittleEndian(header[(headerBytes - 4)..], Crc32C.Compute(header[..(headerBytes - 4)]));

    public static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}

/// <summary>The pool's files are not a format this build can open: not a pool, corrupt, or written by a newer Cairn.</summary>
public sealed class PoolFormatException(string message) : IOException(message);

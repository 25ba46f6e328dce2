using System.Buffers.Binary;
using Cairn.Core;

namespace Cairn.Integration.Tests.Support;

/// <summary>Checks a block written by fio with verify=crc32c (fio 3.x header layout: magic 0xacca, len, offset, header CRC at 36, data CRC at 40).</summary>
internal static class FioBlock
{
    public static bool IsValidFor(ReadOnlySpan<byte> block, long offset)
    {
        if (BinaryPrimitives.ReadUInt16LittleEndian(block) != 0xACCA)
        {
            return false;
        }
        var length = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
        if (length != block.Length || (long)BinaryPrimitives.ReadUInt64LittleEndian(block[16..]) != offset)
        {
            return false;
        }
        // fio stores its CRC32C values without the final inversion.
        var headerCrc = BinaryPrimitives.ReadUInt32LittleEndian(block[36..]);
        var dataCrc = BinaryPrimitives.ReadUInt32LittleEndian(block[40..]);
        return headerCrc == ~Crc32C.Compute(block[..36]) && dataCrc == ~Crc32C.Compute(block[44..]);
    }

    /// <summary>Fills a block as fio's crc32c verify would (random payload), for writers other than fio; <see cref="IsValidFor"/> accepts it.</summary>
    public static void Fill(Span<byte> block, long offset, Random random)
    {
        random.NextBytes(block);
        BinaryPrimitives.WriteUInt16LittleEndian(block, 0xACCA);
        BinaryPrimitives.WriteUInt32LittleEndian(block[4..], (uint)block.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(block[16..], (ulong)offset);
        BinaryPrimitives.WriteUInt32LittleEndian(block[40..], ~Crc32C.Compute(block[44..]));
        BinaryPrimitives.WriteUInt32LittleEndian(block[36..], ~Crc32C.Compute(block[..36]));
    }
}

using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Cairn.Core;

/// <summary>CRC32C (Castagnoli), the checksum on every stored block. Uses SSE4.2 / ARM CRC instructions when present.</summary>
public static class Crc32C
{
    private const uint Polynomial = 0x82F63B78; // reflected Castagnoli
    private static readonly uint[] Table = BuildTable();

    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(~0u, data);

    /// <summary>Continues a running (non-inverted) CRC state over more data.</summary>
    public static uint Append(uint state, ReadOnlySpan<byte> data)
    {
        if (Sse42.X64.IsSupported)
        {
            return AppendSse42(state, data);
        }
        if (System.Runtime.Intrinsics.Arm.Crc32.Arm64.IsSupported)
        {
            return AppendArm(state, data);
        }
        return AppendTable(state, data);
    }

    private static uint AppendSse42(uint state, ReadOnlySpan<byte> data)
    {
        ulong crc = state;
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var w in words)
        {
            crc = Sse42.X64.Crc32(crc, w);
        }
        uint c = (uint)crc;
        foreach (var b in data[(words.Length * 8)..])
        {
            c = Sse42.Crc32(c, b);
        }
        return c;
    }

    private static uint AppendArm(uint state, ReadOnlySpan<byte> data)
    {
        uint crc = state;
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var w in words)
        {
            crc = System.Runtime.Intrinsics.Arm.Crc32.Arm64.ComputeCrc32C(crc, w);
        }
        foreach (var b in data[(words.Length * 8)..])
        {
            crc = System.Runtime.Intrinsics.Arm.Crc32.ComputeCrc32C(crc, b);
        }
        return crc;
    }

    internal static uint AppendTable(uint state, ReadOnlySpan<byte> data)
    {
        uint crc = state;
        foreach (var b in data)
        {
            crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        }
        return crc;
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? (c >> 1) ^ Polynomial : c >> 1;
            }
            table[i] = c;
        }
        return table;
    }
}

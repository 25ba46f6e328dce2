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

    /// <summary>
    /// CRC32C of each consecutive <paramref name="blockBytes"/>-sized block of <paramref name="data"/> into <paramref name="crcs"/>.
    /// The CRC instruction has a latency of several cycles but issues every cycle, so four blocks hashed in interleaved
    /// streams run about three times faster than one after another; block checksums never need combining.
    /// </summary>
    public static void ComputeBlocks(ReadOnlySpan<byte> data, int blockBytes, Span<uint> crcs)
    {
        int blocks = data.Length / blockBytes;
        if (blocks * blockBytes != data.Length || crcs.Length < blocks)
        {
            throw new ArgumentException("data must be whole blocks and crcs must have room for each");
        }
        int i = 0;
        if (Sse42.X64.IsSupported && blockBytes % 8 == 0)
        {
            for (; i + 4 <= blocks; i += 4)
            {
                ComputeFourSse42(data.Slice(i * blockBytes, 4 * blockBytes), blockBytes, crcs.Slice(i, 4));
            }
        }
        for (; i < blocks; i++)
        {
            crcs[i] = Compute(data.Slice(i * blockBytes, blockBytes));
        }
    }

    private static void ComputeFourSse42(ReadOnlySpan<byte> data, int blockBytes, Span<uint> crcs)
    {
        var w0 = MemoryMarshal.Cast<byte, ulong>(data[..blockBytes]);
        var w1 = MemoryMarshal.Cast<byte, ulong>(data.Slice(blockBytes, blockBytes));
        var w2 = MemoryMarshal.Cast<byte, ulong>(data.Slice(2 * blockBytes, blockBytes));
        var w3 = MemoryMarshal.Cast<byte, ulong>(data.Slice(3 * blockBytes, blockBytes));
        ulong c0 = uint.MaxValue, c1 = uint.MaxValue, c2 = uint.MaxValue, c3 = uint.MaxValue;
        for (int k = 0; k < w0.Length; k++)
        {
            c0 = Sse42.X64.Crc32(c0, w0[k]);
            c1 = Sse42.X64.Crc32(c1, w1[k]);
            c2 = Sse42.X64.Crc32(c2, w2[k]);
            c3 = Sse42.X64.Crc32(c3, w3[k]);
        }
        crcs[0] = ~(uint)c0;
        crcs[1] = ~(uint)c1;
        crcs[2] = ~(uint)c2;
        crcs[3] = ~(uint)c3;
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

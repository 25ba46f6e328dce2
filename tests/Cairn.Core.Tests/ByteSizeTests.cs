namespace Cairn.Core.Tests;

public class ByteSizeTests
{
    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("10GiB", 10L << 30)]
    [InlineData("10G", 10L << 30)]
    [InlineData("1.5KiB", 1536L)]
    [InlineData(" 2 TiB ", 2L << 40)]
    public void Parses_sizes_with_binary_units(string text, long expected)
    {
        Assert.True(ByteSize.TryParse(text, out var bytes, out var error), error);
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("")]
    [InlineData("ten")]
    [InlineData("-5GiB")]
    [InlineData("0")]
    [InlineData("1.3B")]
    [InlineData("99999999999TiB")]
    public void Rejects_bad_sizes_with_a_reason(string text)
    {
        Assert.False(ByteSize.TryParse(text, out _, out var error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void Formats_with_the_largest_unit() =>
        Assert.Equal("10 GiB", ByteSize.Format(10L << 30));
}

public class Crc32CTests
{
    [Fact]
    public void Matches_the_standard_check_value()
    {
        // The CRC32C of "123456789" is 0xE3069283 (RFC 3720 appendix B.4 check value).
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
    }

    [Theory]
    [InlineData(4096, 1)]
    [InlineData(4096, 4)]
    [InlineData(4096, 11)]
    [InlineData(512, 9)]
    public void Block_checksums_match_one_block_at_a_time(int blockBytes, int blocks)
    {
        var data = new byte[blockBytes * blocks];
        new Random(blocks).NextBytes(data);
        var crcs = new uint[blocks];
        Crc32C.ComputeBlocks(data, blockBytes, crcs);
        for (int i = 0; i < blocks; i++)
        {
            Assert.Equal(~Crc32C.AppendTable(~0u, data.AsSpan(i * blockBytes, blockBytes)), crcs[i]);
        }
    }

    [Fact]
    public void Hardware_and_table_paths_agree()
    {
        var data = new byte[4099];
        new Random(7).NextBytes(data);
        Assert.Equal(~Crc32C.AppendTable(~0u, data), Crc32C.Compute(data));
    }
}

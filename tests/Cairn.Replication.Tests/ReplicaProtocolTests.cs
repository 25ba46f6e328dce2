namespace Cairn.Replication.Tests;

public sealed class ReplicaProtocolTests
{
    [Theory]
    [InlineData(ReplicaFlags.ForceUnitAccess)]
    [InlineData(ReplicaFlags.Uncached)] // a rebuild's copy
    [InlineData(ReplicaFlags.Uncached | ReplicaFlags.ForceUnitAccess)]
    public void Requests_round_trip(ReplicaFlags flags)
    {
        var request = new ReplicaRequest(ReplicaOp.Write, flags, 7, 42, 1L << 40, 65536);
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        request.Encode(header);

        Assert.True(ReplicaRequest.TryDecode(header, out var decoded, out string error), error);
        Assert.Equal(request, decoded);
    }

    [Fact]
    public void Replies_and_hellos_round_trip()
    {
        byte[] reply = new byte[ReplicaProtocol.ReplyHeaderSize];
        new ReplicaReply(ReplicaStatus.StaleEpoch, 99).Encode(reply);
        Assert.True(ReplicaReply.TryDecode(reply, out var decoded));
        Assert.Equal(new ReplicaReply(ReplicaStatus.StaleEpoch, 99), decoded);

        byte[] hello = ReplicaHello.Encode("vol-1/replica-2", 5);
        Assert.True(ReplicaHello.TryDecodeHeader(hello, out int nameLength, out ulong epoch, out string error), error);
        Assert.Equal(("vol-1/replica-2", 5UL), (System.Text.Encoding.UTF8.GetString(hello, ReplicaProtocol.HelloHeaderSize, nameLength), epoch));
    }

    [Theory]
    [InlineData(0, 0, 0, 0, "bad request magic")]
    [InlineData(1, 15, 0, 0, "unknown op 15")] // the first op after RewriteSnapshotBlock
    [InlineData(1, 2, 0x80, 0, "unknown flags 0x0080")]
    [InlineData(1, 1, 0, -1, "negative offset")]
    [InlineData(1, 1, 4, 0, "flag UNCACHED on a Read request")] // only writes carry it
    [InlineData(1, 4, 4, 0, "flag UNCACHED on a Trim request")]
    [InlineData(1, 5, 6, 0, "flag UNCACHED on a WriteZeroes request")]
    [InlineData(1, 3, 4, 0, "flag UNCACHED on a Flush request")]
    public void Malformed_requests_say_what_is_wrong(int magicOk, int op, int flags, long offset, string expected)
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        new ReplicaRequest((ReplicaOp)op, (ReplicaFlags)flags, 1, 1, offset, 512).Encode(header);
        if (magicOk == 0)
        {
            header[0] ^= 0xFF;
        }

        Assert.False(ReplicaRequest.TryDecode(header, out _, out string error));
        Assert.StartsWith(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Payloads_above_the_limit_are_refused()
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        new ReplicaRequest(ReplicaOp.Write, ReplicaFlags.None, 1, 1, 0, ReplicaProtocol.MaxPayloadBytes + 1).Encode(header);

        Assert.False(ReplicaRequest.TryDecode(header, out _, out string error));
        Assert.Contains("exceeds", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Hellos_with_bad_versions_or_names_are_refused()
    {
        byte[] hello = ReplicaHello.Encode("r", 1);
        hello[4] = 9;
        Assert.False(ReplicaHello.TryDecodeHeader(hello, out _, out _, out string version));
        Assert.Contains("protocol version 9", version, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => ReplicaHello.Encode(new string('x', 256), 1));
    }

    [Fact]
    public void Grow_and_snapshot_requests_round_trip_and_snapshots_carry_their_name()
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        foreach (var request in new[]
        {
            new ReplicaRequest(ReplicaOp.Grow, ReplicaFlags.None, 3, 1, 1L << 41, 0),
            new ReplicaRequest(ReplicaOp.CreateSnapshot, ReplicaFlags.None, 3, 2, 0, 255),
            new ReplicaRequest(ReplicaOp.DeleteSnapshot, ReplicaFlags.None, 3, 3, 0, 1),
        })
        {
            request.Encode(header);
            Assert.True(ReplicaRequest.TryDecode(header, out var decoded, out string error), error);
            Assert.Equal(request, decoded);
            Assert.Equal(request.Op != ReplicaOp.Grow, decoded.CarriesPayload);
        }
        Assert.Equal((ReplicaOp)6, ReplicaOp.Grow); // appended: the numbers on the wire never change
    }

    [Theory]
    [InlineData(7, 0, "snapshot name of 0 bytes")]
    [InlineData(8, 256, "snapshot name of 256 bytes")]
    [InlineData(6, 16, "grow with a payload")]
    public void Snapshot_names_out_of_bounds_and_grows_with_payloads_are_refused(int op, uint length, string expected)
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        new ReplicaRequest((ReplicaOp)op, ReplicaFlags.None, 1, 1, 0, length).Encode(header);

        Assert.False(ReplicaRequest.TryDecode(header, out _, out string error));
        Assert.StartsWith(expected, error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, ReplicaProtocol.MaxVerifyBytes + 4096, "verify of 266240 bytes exceeds 262144")]
    [InlineData(512, 4096, "verify at offset 512, not a multiple of 4096")]
    public void Verifies_beyond_one_bitmap_or_off_block_boundaries_are_refused(long offset, uint length, string expected)
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        new ReplicaRequest(ReplicaOp.Verify, ReplicaFlags.None, 1, 1, offset, length).Encode(header);

        Assert.False(ReplicaRequest.TryDecode(header, out _, out string error));
        Assert.Equal(expected, error);
    }

    [Fact]
    public void A_verify_carries_no_payload_and_is_answered_with_an_eight_byte_bitmap()
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        var request = new ReplicaRequest(ReplicaOp.Verify, ReplicaFlags.None, 4, 7, 1L << 30, ReplicaProtocol.MaxVerifyBytes);
        request.Encode(header);
        Assert.True(ReplicaRequest.TryDecode(header, out var decoded, out string error), error);
        Assert.Equal(request, decoded);
        Assert.False(decoded.CarriesPayload);
        Assert.Equal(8, ReplicaProtocol.ReplyPayloadBytes(ReplicaOp.Verify, ReplicaProtocol.MaxVerifyBytes));
        Assert.Equal(4096, ReplicaProtocol.ReplyPayloadBytes(ReplicaOp.Read, 4096));
        Assert.Equal(0, ReplicaProtocol.ReplyPayloadBytes(ReplicaOp.Write, 4096));
        Assert.Equal((ReplicaOp)11, ReplicaOp.Verify); // appended: the numbers on the wire never change
    }

    [Fact]
    public void A_snapshot_block_read_carries_the_snapshot_s_name_covers_one_block_and_is_answered_with_it()
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        var request = new ReplicaRequest(ReplicaOp.ReadSnapshotBlock, ReplicaFlags.None, 4, 8, 1L << 30, 255);
        request.Encode(header);
        Assert.True(ReplicaRequest.TryDecode(header, out var decoded, out string error), error);
        Assert.Equal(request, decoded);
        Assert.True(decoded.CarriesPayload); // the name
        Assert.Equal(4096, decoded.RangeBytes);
        Assert.Equal(4096, ReplicaProtocol.ReplyPayloadBytes(ReplicaOp.ReadSnapshotBlock, 2));
        Assert.Equal((ReplicaOp)12, ReplicaOp.ReadSnapshotBlock); // appended: the numbers on the wire never change
    }

    [Fact]
    public void A_snapshot_verify_carries_the_name_covers_a_verify_window_and_a_rewrite_carries_the_name_and_the_block()
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        var verify = new ReplicaRequest(ReplicaOp.VerifySnapshot, ReplicaFlags.None, 4, 9, 1L << 30, 2);
        verify.Encode(header);
        Assert.True(ReplicaRequest.TryDecode(header, out var decoded, out string error), error);
        Assert.Equal((verify, true, (long)ReplicaProtocol.MaxVerifyBytes), (decoded, decoded.CarriesPayload, decoded.RangeBytes));
        Assert.Equal(8, ReplicaProtocol.ReplyPayloadBytes(ReplicaOp.VerifySnapshot, 2));

        var rewrite = new ReplicaRequest(ReplicaOp.RewriteSnapshotBlock, ReplicaFlags.None, 4, 10, 8192, 4096 + 2);
        rewrite.Encode(header);
        Assert.True(ReplicaRequest.TryDecode(header, out decoded, out error), error);
        Assert.Equal((rewrite, true, 4096L, 2), (decoded, decoded.CarriesPayload, decoded.RangeBytes, ReplicaProtocol.NameBytes(decoded)));
        Assert.Equal(1, ReplicaProtocol.ReplyPayloadBytes(ReplicaOp.RewriteSnapshotBlock, 4098));
        Assert.Equal(((ReplicaOp)13, (ReplicaOp)14), (ReplicaOp.VerifySnapshot, ReplicaOp.RewriteSnapshotBlock)); // appended: the numbers on the wire never change
    }

    [Theory]
    [InlineData(ReplicaOp.VerifySnapshot, 512, 2, "snapshot verify at offset 512, not a multiple of 4096")]
    [InlineData(ReplicaOp.VerifySnapshot, 0, 0, "snapshot name of 0 bytes (1-255)")]
    [InlineData(ReplicaOp.RewriteSnapshotBlock, 512, 4098, "snapshot block rewrite at offset 512, not a multiple of 4096")]
    [InlineData(ReplicaOp.RewriteSnapshotBlock, 0, 4096, "snapshot block rewrite of 4096 bytes (a name of 1-255 bytes and a 4096-byte block)")]
    [InlineData(ReplicaOp.RewriteSnapshotBlock, 0, 4096 + 256, "snapshot block rewrite of 4352 bytes (a name of 1-255 bytes and a 4096-byte block)")]
    public void Snapshot_verifies_and_rewrites_off_block_boundaries_or_of_bad_lengths_are_refused(ReplicaOp op, long offset, uint length, string expected)
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        new ReplicaRequest(op, ReplicaFlags.None, 1, 1, offset, length).Encode(header);

        Assert.False(ReplicaRequest.TryDecode(header, out _, out string error));
        Assert.Equal(expected, error);
    }

    [Theory]
    [InlineData(512, 2, "snapshot block read at offset 512, not a multiple of 4096")]
    [InlineData(0, 0, "snapshot name of 0 bytes (1-255)")]
    [InlineData(0, 256, "snapshot name of 256 bytes (1-255)")]
    public void Snapshot_block_reads_off_block_boundaries_or_with_bad_names_are_refused(long offset, uint length, string expected)
    {
        byte[] header = new byte[ReplicaProtocol.RequestHeaderSize];
        new ReplicaRequest(ReplicaOp.ReadSnapshotBlock, ReplicaFlags.None, 1, 1, offset, length).Encode(header);

        Assert.False(ReplicaRequest.TryDecode(header, out _, out string error));
        Assert.Equal(expected, error);
    }
}

using System.Buffers.Binary;
using Cairn.Frontends.Iscsi.Pdus;

namespace Cairn.Frontends.Iscsi.Tests;

public sealed class PduTests
{
    [Theory]
    [InlineData(0, false, false)]
    [InlineData(1, false, false)]
    [InlineData(5, true, false)]
    [InlineData(8, false, true)]
    [InlineData(4099, true, true)]
    public void A_frame_round_trips_with_padding_and_digests(int dataBytes, bool headerDigest, bool dataDigest)
    {
        var data = new byte[dataBytes];
        new Random(dataBytes).NextBytes(data);
        var frame = new byte[PduCodec.FrameBytes(0, dataBytes, headerDigest, dataDigest)];
        new NopIn(Lun: 0, InitiatorTaskTag: 0x1234, TargetTransferTag: Bhs.ReservedTag).WriteTo(frame);

        int length = PduCodec.Encode(frame, data, headerDigest, dataDigest);

        Assert.Equal(frame.Length, length);
        Assert.Equal(0, length % 4);
        Assert.Equal(length - Bhs.Length, PduCodec.BytesAfterBhs(frame, headerDigest, dataDigest));
        Assert.Equal(FrameError.None, PduCodec.Decode(frame, headerDigest, dataDigest, out int headerBytes, out int dataStart, out int decodedBytes));
        Assert.Equal(Bhs.Length, headerBytes);
        Assert.Equal(dataBytes, decodedBytes);
        Assert.True(data.AsSpan().SequenceEqual(frame.AsSpan(dataStart, decodedBytes)));
        Assert.Equal(Opcode.NopIn, Bhs.GetOpcode(frame));
        Assert.Equal(0x1234u, Bhs.InitiatorTaskTag(frame));
    }

    [Fact]
    public void Corrupt_digests_are_detected()
    {
        var frame = new byte[PduCodec.FrameBytes(0, 16, true, true)];
        new NopIn(0, 1, Bhs.ReservedTag).WriteTo(frame);
        PduCodec.Encode(frame, new byte[16], headerDigest: true, dataDigest: true);

        var badHeader = (byte[])frame.Clone();
        badHeader[20] ^= 1;
        Assert.Equal(FrameError.HeaderDigest, PduCodec.Decode(badHeader, true, true, out _, out _, out _));
        var badData = (byte[])frame.Clone();
        badData[Bhs.Length + 4 + 3] ^= 1;
        Assert.Equal(FrameError.DataDigest, PduCodec.Decode(badData, true, true, out _, out _, out _));
    }

    [Fact]
    public void The_header_digest_is_crc32c_least_significant_byte_first()
    {
        // RFC 3720 B.4: CRC32C of 32 zero bytes is 0x8a9136aa, sent as aa 36 91 8a.
        Assert.Equal(0x8a9136aau, Cairn.Core.Crc32C.Compute(new byte[32]));
        var frame = new byte[Bhs.Length + 4];
        PduCodec.Encode(frame, [], headerDigest: true, dataDigest: false);
        Assert.Equal(Cairn.Core.Crc32C.Compute(new byte[Bhs.Length]), BinaryPrimitives.ReadUInt32LittleEndian(frame.AsSpan(Bhs.Length)));
    }

    [Fact]
    public void Ahs_is_counted_in_the_frame_and_the_header()
    {
        var frame = new byte[Bhs.Length + 8 + 4];
        frame[0] = (byte)Opcode.ScsiCommand;
        frame[4] = 2; // TotalAHSLength in 4-byte words
        Bhs.SetDataSegmentLength(frame, 3);
        Assert.Equal(8 + 4, PduCodec.BytesAfterBhs(frame, false, false));
        Assert.Equal(FrameError.None, PduCodec.Decode(frame, false, false, out int headerBytes, out int dataStart, out int dataBytes));
        Assert.Equal(Bhs.Length + 8, headerBytes);
        Assert.Equal(Bhs.Length + 8, dataStart);
        Assert.Equal(3, dataBytes);
    }

    [Fact]
    public void Login_request_round_trips()
    {
        var request = new LoginRequest(true, false, LoginStage.Security, LoginStage.Operational, 0, 0,
            Isid: 0x0000_8001_2345_6789 & 0xFFFF_FFFF_FFFF, Tsih: 0, InitiatorTaskTag: 7, ConnectionId: 1, CmdSn: 99, ExpStatSn: 5);
        var bhs = new byte[Bhs.Length];
        request.WriteTo(bhs);
        Assert.Equal(Opcode.LoginRequest, Bhs.GetOpcode(bhs));
        Assert.True(Bhs.IsImmediate(bhs));
        Assert.Equal(request, LoginRequest.Parse(bhs));
    }

    [Fact]
    public void Login_response_carries_stages_and_status()
    {
        var bhs = new byte[Bhs.Length];
        new LoginResponse(true, LoginStage.Operational, LoginStage.FullFeature, 0x1122_3344_5566, 9, 42, LoginStatus.Success).WriteTo(bhs);
        Assert.Equal(0x87, bhs[1]); // T, CSG=1, NSG=3
        var failed = new LoginResponse(false, LoginStage.Security, LoginStage.FullFeature, 1, 0, 42, LoginStatus.NotFound);
        failed.WriteTo(bhs);
        Assert.Equal(0x00, bhs[1] & 0x83); // no transit, no NSG
        Assert.Equal((0x02, 0x03), (bhs[36], bhs[37]));
        Assert.Equal(failed with { NextStage = LoginStage.Security }, LoginResponse.Parse(bhs));
    }

    [Fact]
    public void Scsi_command_fields_and_cdb_are_parsed()
    {
        var bhs = new byte[Bhs.Length];
        bhs[0] = (byte)Opcode.ScsiCommand;
        bhs[1] = 0x80 | 0x40 | 0x01; // F, R, SIMPLE
        Bhs.Put(bhs, 16, 0xABCDu);
        Bhs.Put(bhs, 20, 4096u);
        Bhs.Put(bhs, 24, 17u);
        bhs[32] = 0x28;
        var command = ScsiCommand.Parse(bhs);
        Assert.Equal(new ScsiCommand(true, true, false, 0, 0xABCD, 4096, 17), command);
        Assert.Equal(0x28, ScsiCommand.Cdb(bhs)[0]);
    }

    [Fact]
    public void Data_in_with_status_carries_residual_flags_and_count()
    {
        var bhs = new byte[Bhs.Length];
        new DataIn(true, true, 0, 0, 5, 3, 8192, Residual.Of(expectedBytes: 4096, wantedBytes: 1024)).WriteTo(bhs);
        Assert.Equal(0x80 | 0x02 | 0x01, bhs[1]); // F, U, S
        Assert.Equal(3u, Bhs.U32(bhs, 36));
        Assert.Equal(8192u, Bhs.U32(bhs, 40));
        Assert.Equal(3072u, Bhs.U32(bhs, 44));

        new DataIn(false, false, 0, 0, 5, 0, 0, Residual.Of(4096, 1024)).WriteTo(bhs);
        Assert.Equal(0, bhs[1]); // neither F nor status bits on a middle PDU
        Assert.Equal(0u, Bhs.U32(bhs, 44));
    }

    [Theory]
    [InlineData(512u, 512L, false, false, 0u)]
    [InlineData(512u, 1024L, true, false, 512u)]
    [InlineData(1024u, 512L, false, true, 512u)]
    public void Residuals_are_exact(uint expected, long wanted, bool overflow, bool underflow, uint count)
    {
        Assert.Equal(new Residual(overflow, underflow, count), Residual.Of(expected, wanted));
    }

    [Fact]
    public void Serial_number_comparison_wraps()
    {
        Assert.True(Bhs.SerialLess(0xFFFF_FFFF, 0));
        Assert.False(Bhs.SerialLess(0, 0xFFFF_FFFF));
        Assert.False(Bhs.SerialLess(5, 5));
    }
}

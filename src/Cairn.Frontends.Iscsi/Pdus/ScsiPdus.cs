namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>The SCSI Command PDU (RFC 7143 §11.3): the CDB lives in bytes 32–47 of the BHS.</summary>
internal readonly record struct ScsiCommand(
    bool Final, bool Read, bool Write, ulong Lun, uint InitiatorTaskTag, uint ExpectedDataTransferLength, uint CmdSn)
{
    public const int CdbOffset = 32;
    public const int CdbBytes = 16;

    public static ScsiCommand Parse(ReadOnlySpan<byte> bhs) => new(
        Final: (bhs[1] & 0x80) != 0,
        Read: (bhs[1] & 0x40) != 0,
        Write: (bhs[1] & 0x20) != 0,
        Lun: Bhs.Lun(bhs),
        InitiatorTaskTag: Bhs.InitiatorTaskTag(bhs),
        ExpectedDataTransferLength: Bhs.U32(bhs, 20),
        CmdSn: Bhs.U32(bhs, 24));

    public static ReadOnlySpan<byte> Cdb(ReadOnlySpan<byte> bhs) => bhs.Slice(CdbOffset, CdbBytes);
}

/// <summary>How the SCSI layer's transfer length compares with what the initiator expected (RFC 7143 §11.4.5).</summary>
internal readonly record struct Residual(bool Overflow, bool Underflow, uint Count)
{
    public static Residual Of(uint expectedBytes, long wantedBytes) =>
        wantedBytes > expectedBytes ? new(true, false, (uint)Math.Min(wantedBytes - expectedBytes, uint.MaxValue))
        : wantedBytes < expectedBytes ? new(false, true, (uint)(expectedBytes - wantedBytes))
        : default;

    public byte Flags => (byte)((Overflow ? 0x04 : 0) | (Underflow ? 0x02 : 0));
}

/// <summary>The SCSI Response PDU; sense data travels in the data segment behind a 2-byte length.</summary>
internal readonly record struct ScsiResponse(uint InitiatorTaskTag, byte Status, Residual Residual, uint ExpDataSn)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.ScsiResponse;
        bhs[1] = (byte)(0x80 | Residual.Flags);
        bhs[2] = 0; // Command Completed at Target
        bhs[3] = Status;
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 36, ExpDataSn);
        Bhs.Put(bhs, 44, Residual.Count);
    }
}

/// <summary>SCSI Data-In (RFC 7143 §11.7); the last PDU of a command may carry the status (S bit, "phase collapse").</summary>
internal readonly record struct DataIn(
    bool Final, bool HasStatus, byte Status, ulong Lun, uint InitiatorTaskTag, uint DataSn, uint BufferOffset, Residual Residual)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.DataIn;
        bhs[1] = (byte)((Final ? 0x80 : 0) | (HasStatus ? 0x01 | Residual.Flags : 0));
        bhs[3] = HasStatus ? Status : (byte)0;
        Bhs.Put(bhs, 8, Lun);
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 20, Bhs.ReservedTag);
        Bhs.Put(bhs, 36, DataSn);
        Bhs.Put(bhs, 40, BufferOffset);
        Bhs.Put(bhs, 44, HasStatus ? Residual.Count : 0u);
    }
}

/// <summary>SCSI Data-Out (RFC 7143 §11.7): solicited (TTT from an R2T) or unsolicited (TTT reserved).</summary>
internal readonly record struct DataOut(bool Final, ulong Lun, uint InitiatorTaskTag, uint TargetTransferTag, uint DataSn, uint BufferOffset)
{
    public static DataOut Parse(ReadOnlySpan<byte> bhs) => new(
        Final: (bhs[1] & 0x80) != 0,
        Lun: Bhs.Lun(bhs),
        InitiatorTaskTag: Bhs.InitiatorTaskTag(bhs),
        TargetTransferTag: Bhs.U32(bhs, 20),
        DataSn: Bhs.U32(bhs, 36),
        BufferOffset: Bhs.U32(bhs, 40));
}

/// <summary>Ready To Transfer (RFC 7143 §11.8): asks for one burst of a write's data.</summary>
internal readonly record struct ReadyToTransfer(ulong Lun, uint InitiatorTaskTag, uint TargetTransferTag, uint R2TSn, uint BufferOffset, uint DesiredLength)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.ReadyToTransfer;
        bhs[1] = 0x80;
        Bhs.Put(bhs, 8, Lun);
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 20, TargetTransferTag);
        Bhs.Put(bhs, 36, R2TSn);
        Bhs.Put(bhs, 40, BufferOffset);
        Bhs.Put(bhs, 44, DesiredLength);
    }
}

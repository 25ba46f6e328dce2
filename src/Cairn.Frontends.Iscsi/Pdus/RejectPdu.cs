namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>Reject reasons (RFC 7143 §11.17.1).</summary>
internal enum RejectReason : byte
{
    DataDigestError = 0x02,
    SnackReject = 0x03,
    ProtocolError = 0x04,
    CommandNotSupported = 0x05,
    ImmediateCommandReject = 0x06,
    TaskInProgress = 0x07,
    InvalidDataAck = 0x08,
    InvalidPduField = 0x09,
    LongOperationReject = 0x0A,
    WaitingForLogout = 0x0C,
}

/// <summary>A Reject carries the rejected PDU's BHS as its data segment.</summary>
internal readonly record struct RejectPdu(RejectReason Reason)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.Reject;
        bhs[1] = 0x80;
        bhs[2] = (byte)Reason;
        Bhs.Put(bhs, 16, Bhs.ReservedTag);
    }
}

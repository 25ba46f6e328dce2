namespace Cairn.Frontends.Iscsi.Pdus;

internal enum LogoutReason : byte
{
    CloseSession = 0,
    CloseConnection = 1,
    RemoveConnectionForRecovery = 2,
}

internal readonly record struct LogoutRequest(LogoutReason Reason, uint InitiatorTaskTag, ushort ConnectionId, uint CmdSn)
{
    public static LogoutRequest Parse(ReadOnlySpan<byte> bhs) =>
        new((LogoutReason)(bhs[1] & 0x7f), Bhs.InitiatorTaskTag(bhs), Bhs.U16(bhs, 20), Bhs.U32(bhs, 24));
}

/// <summary>Logout response codes (RFC 7143 §11.15.1).</summary>
internal enum LogoutResponseCode : byte
{
    Success = 0,
    ConnectionIdNotFound = 1,
    RecoveryNotSupported = 2,
}

internal readonly record struct LogoutResponse(LogoutResponseCode Response, uint InitiatorTaskTag, ushort Time2Wait, ushort Time2Retain)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.LogoutResponse;
        bhs[1] = 0x80;
        bhs[2] = (byte)Response;
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 40, Time2Wait);
        Bhs.Put(bhs, 42, Time2Retain);
    }
}

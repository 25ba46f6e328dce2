namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>Login stages (CSG/NSG, RFC 7143 §11.12.3).</summary>
internal enum LoginStage : byte
{
    Security = 0,
    Operational = 1,
    FullFeature = 3,
}

/// <summary>Login response status, class in the high byte and detail in the low byte (RFC 7143 §11.13.5).</summary>
internal enum LoginStatus : ushort
{
    Success = 0x0000,
    InitiatorError = 0x0200,
    AuthenticationFailure = 0x0201,
    AuthorizationFailure = 0x0202,
    NotFound = 0x0203,
    UnsupportedVersion = 0x0205,
    MissingParameter = 0x0207,
    SessionTypeNotSupported = 0x0209,
    SessionDoesNotExist = 0x020A,
    InvalidDuringLogin = 0x020B,
    TargetError = 0x0300,
    OutOfResources = 0x0302,
}

internal readonly record struct LoginRequest(
    bool Transit, bool Continue, LoginStage CurrentStage, LoginStage NextStage, byte VersionMax, byte VersionMin,
    ulong Isid, ushort Tsih, uint InitiatorTaskTag, ushort ConnectionId, uint CmdSn, uint ExpStatSn)
{
    public static LoginRequest Parse(ReadOnlySpan<byte> bhs) => new(
        Transit: (bhs[1] & 0x80) != 0,
        Continue: (bhs[1] & 0x40) != 0,
        CurrentStage: (LoginStage)((bhs[1] >> 2) & 3),
        NextStage: (LoginStage)(bhs[1] & 3),
        VersionMax: bhs[2],
        VersionMin: bhs[3],
        Isid: ReadIsid(bhs),
        Tsih: Bhs.U16(bhs, 14),
        InitiatorTaskTag: Bhs.U32(bhs, 16),
        ConnectionId: Bhs.U16(bhs, 20),
        CmdSn: Bhs.U32(bhs, 24),
        ExpStatSn: Bhs.U32(bhs, 28));

    /// <summary>Writes the request as an initiator would (tests drive the target with it).</summary>
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = Bhs.ImmediateBit | (byte)Opcode.LoginRequest;
        bhs[1] = (byte)((Transit ? 0x80 : 0) | (Continue ? 0x40 : 0) | ((byte)CurrentStage << 2) | (byte)NextStage);
        bhs[2] = VersionMax;
        bhs[3] = VersionMin;
        WriteIsid(bhs, Isid);
        Bhs.Put(bhs, 14, Tsih);
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 20, ConnectionId);
        Bhs.Put(bhs, 24, CmdSn);
        Bhs.Put(bhs, 28, ExpStatSn);
    }

    internal static ulong ReadIsid(ReadOnlySpan<byte> bhs)
    {
        ulong isid = 0;
        for (int i = 8; i < 14; i++)
        {
            isid = (isid << 8) | bhs[i];
        }
        return isid;
    }

    internal static void WriteIsid(Span<byte> bhs, ulong isid)
    {
        for (int i = 13; i >= 8; i--)
        {
            bhs[i] = (byte)isid;
            isid >>= 8;
        }
    }
}

internal readonly record struct LoginResponse(
    bool Transit, LoginStage CurrentStage, LoginStage NextStage, ulong Isid, ushort Tsih, uint InitiatorTaskTag, LoginStatus Status)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.LoginResponse;
        bhs[1] = (byte)((Transit ? 0x80 : 0) | ((byte)CurrentStage << 2) | (Transit ? (byte)NextStage : 0));
        // VersionMax and VersionActive: RFC 7143 defines only version 0.
        LoginRequest.WriteIsid(bhs, Isid);
        Bhs.Put(bhs, 14, Tsih);
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        bhs[36] = (byte)((ushort)Status >> 8);
        bhs[37] = (byte)Status;
    }

    public static LoginResponse Parse(ReadOnlySpan<byte> bhs) => new(
        Transit: (bhs[1] & 0x80) != 0,
        CurrentStage: (LoginStage)((bhs[1] >> 2) & 3),
        NextStage: (LoginStage)(bhs[1] & 3),
        Isid: LoginRequest.ReadIsid(bhs),
        Tsih: Bhs.U16(bhs, 14),
        InitiatorTaskTag: Bhs.U32(bhs, 16),
        Status: (LoginStatus)((bhs[36] << 8) | bhs[37]));
}

namespace Cairn.Frontends.Iscsi.Login;

internal enum SessionType
{
    Normal,
    Discovery,
}

/// <summary>
/// The operational parameters a login settled on (RFC 7143 §13), starting at the RFC defaults for keys the
/// initiator never sent. "Initiator" limits bound what we send; "target" limits bound what we accept.
/// </summary>
internal sealed class SessionParameters
{
    public string? InitiatorName { get; set; }
    public string? InitiatorAlias { get; set; }
    public string? TargetName { get; set; }
    public SessionType SessionType { get; set; } = SessionType.Normal;
    public bool HeaderDigest { get; set; }
    public bool DataDigest { get; set; }
    public bool InitialR2T { get; set; } = true;
    public bool ImmediateData { get; set; } = true;
    /// <summary>Largest data segment the initiator accepts: Data-In and other target PDUs are split by it.</summary>
    public int InitiatorMaxRecvDataSegmentLength { get; set; } = 8192;
    public int MaxBurstLength { get; set; } = 262144;
    public int FirstBurstLength { get; set; } = 65536;
    public int MaxOutstandingR2T { get; set; } = 1;
    public int DefaultTime2Wait { get; set; } = 2;
    public int DefaultTime2Retain { get; set; } = 20;
    public int ErrorRecoveryLevel { get; set; }
    public bool DataPduInOrder { get; set; } = true;
    public bool DataSequenceInOrder { get; set; } = true;
}

/// <summary>What this target offers in negotiation.</summary>
internal static class TargetLimits
{
    /// <summary>Largest data segment we accept in one PDU; declared to the initiator.</summary>
    public const int MaxRecvDataSegmentLength = 262144;
    public const int MaxBurstLength = 1048576;
    public const int FirstBurstLength = 262144;
    /// <summary>One R2T at a time keeps the write path simple; open-iscsi and libiscsi default to 1 anyway.</summary>
    public const int MaxOutstandingR2T = 1;
    public const int DefaultTime2Wait = 2;
    public const int DefaultTime2Retain = 20;
    public const ushort TargetPortalGroupTag = 1;
}

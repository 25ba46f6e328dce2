namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>Task management functions (RFC 7143 §11.5.1).</summary>
internal enum TaskManagementFunction : byte
{
    AbortTask = 1,
    AbortTaskSet = 2,
    ClearAca = 3,
    ClearTaskSet = 4,
    LogicalUnitReset = 5,
    TargetWarmReset = 6,
    TargetColdReset = 7,
    TaskReassign = 8,
}

internal enum TaskManagementResponseCode : byte
{
    FunctionComplete = 0,
    TaskDoesNotExist = 1,
    LunDoesNotExist = 2,
    TaskStillAllegiant = 3,
    ReassignmentNotSupported = 4,
    FunctionNotSupported = 5,
    AuthorizationFailed = 6,
    FunctionRejected = 255,
}

internal readonly record struct TaskManagementRequest(
    TaskManagementFunction Function, ulong Lun, uint InitiatorTaskTag, uint ReferencedTaskTag, uint CmdSn, uint RefCmdSn)
{
    public static TaskManagementRequest Parse(ReadOnlySpan<byte> bhs) =>
        new((TaskManagementFunction)(bhs[1] & 0x7f), Bhs.Lun(bhs), Bhs.InitiatorTaskTag(bhs), Bhs.U32(bhs, 20), Bhs.U32(bhs, 24), Bhs.U32(bhs, 32));
}

internal readonly record struct TaskManagementResponse(TaskManagementResponseCode Response, uint InitiatorTaskTag)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.TaskManagementResponse;
        bhs[1] = 0x80;
        bhs[2] = (byte)Response;
        Bhs.Put(bhs, 16, InitiatorTaskTag);
    }
}

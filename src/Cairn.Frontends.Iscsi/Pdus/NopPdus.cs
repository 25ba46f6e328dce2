namespace Cairn.Frontends.Iscsi.Pdus;

/// <summary>NOP-Out: a ping from the initiator (ITT set, wants a NOP-In) or the answer to our ping (ITT reserved).</summary>
internal readonly record struct NopOut(ulong Lun, uint InitiatorTaskTag, uint TargetTransferTag, uint CmdSn)
{
    public static NopOut Parse(ReadOnlySpan<byte> bhs) => new(Bhs.Lun(bhs), Bhs.InitiatorTaskTag(bhs), Bhs.U32(bhs, 20), Bhs.U32(bhs, 24));
}

internal readonly record struct NopIn(ulong Lun, uint InitiatorTaskTag, uint TargetTransferTag)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.NopIn;
        bhs[1] = 0x80;
        Bhs.Put(bhs, 8, Lun);
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 20, TargetTransferTag);
    }
}

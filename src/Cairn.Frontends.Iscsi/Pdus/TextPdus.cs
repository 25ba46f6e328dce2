namespace Cairn.Frontends.Iscsi.Pdus;

internal readonly record struct TextRequest(bool Final, bool Continue, uint InitiatorTaskTag, uint TargetTransferTag, uint CmdSn)
{
    public static TextRequest Parse(ReadOnlySpan<byte> bhs) => new(
        Final: (bhs[1] & 0x80) != 0,
        Continue: (bhs[1] & 0x40) != 0,
        InitiatorTaskTag: Bhs.U32(bhs, 16),
        TargetTransferTag: Bhs.U32(bhs, 20),
        CmdSn: Bhs.U32(bhs, 24));
}

internal readonly record struct TextResponse(bool Final, uint InitiatorTaskTag, uint TargetTransferTag)
{
    public void WriteTo(Span<byte> bhs)
    {
        bhs[..Bhs.Length].Clear();
        bhs[0] = (byte)Opcode.TextResponse;
        bhs[1] = (byte)(Final ? 0x80 : 0x40);
        Bhs.Put(bhs, 16, InitiatorTaskTag);
        Bhs.Put(bhs, 20, TargetTransferTag);
    }
}

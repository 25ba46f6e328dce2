using System.Buffers.Binary;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>MODE SENSE 6/10: the caching page (write cache on: flush and FUA matter), control and informational exceptions pages.</summary>
internal sealed partial class ScsiLogicalUnit
{
    private const byte CachingPage = 0x08;
    private const byte ControlPage = 0x0A;
    private const byte InformationalExceptionsPage = 0x1C;
    private const byte AllPages = 0x3F;
    private const int BlockDescriptorBytes = 8;

    private ScsiResult ModeSense(ReadOnlySpan<byte> cdb, Span<byte> dataIn)
    {
        bool ten = cdb[0] == ScsiOpcode.ModeSense10;
        bool noBlockDescriptors = (cdb[1] & 0x08) != 0;
        int control = cdb[2] >> 6; // 0 current, 1 changeable, 2 default, 3 saved
        byte page = (byte)(cdb[2] & 0x3F);
        byte subpage = cdb[3];
        int allocation = ten ? BinaryPrimitives.ReadUInt16BigEndian(cdb[7..]) : cdb[4];
        if (control == 3)
        {
            return ScsiResult.Check(SenseData.SavingParametersNotSupported);
        }
        if (subpage != 0 && !(page == AllPages && subpage == 0xFF))
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        Span<byte> r = stackalloc byte[256];
        r.Clear();
        int header = ten ? 8 : 4;
        int at = header;
        if (!noBlockDescriptors)
        {
            ulong blocks = BlockCount;
            BinaryPrimitives.WriteUInt32BigEndian(r[at..], blocks > uint.MaxValue ? uint.MaxValue : (uint)blocks);
            BinaryPrimitives.WriteUInt32BigEndian(r[(at + 4)..], BlockBytes); // byte 4 is reserved, 5..7 the block length
            at += BlockDescriptorBytes;
        }
        int pages = WriteModePages(page, changeable: control == 1, r[at..]);
        if (pages < 0)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        at += pages;
        // Device-specific parameter: WP when read-only, DPOFUA so initiators (Linux sd) send FUA writes.
        byte deviceSpecific = (byte)((_device.IsReadOnly ? 0x80 : 0) | 0x10);
        if (ten)
        {
            BinaryPrimitives.WriteUInt16BigEndian(r, (ushort)(at - 2));
            r[3] = deviceSpecific;
            r[7] = noBlockDescriptors ? (byte)0 : (byte)BlockDescriptorBytes;
        }
        else
        {
            r[0] = (byte)(at - 1);
            r[2] = deviceSpecific;
            r[3] = noBlockDescriptors ? (byte)0 : (byte)BlockDescriptorBytes;
        }
        return Respond(r[..at], allocation, dataIn);
    }

    /// <summary>Writes the requested page (or all); with <paramref name="changeable"/> every field reads 0: nothing can be changed.</summary>
    private static int WriteModePages(byte page, bool changeable, Span<byte> r)
    {
        int at = 0;
        if (page is CachingPage or AllPages)
        {
            r[at] = CachingPage;
            r[at + 1] = 0x12;
            r[at + 2] = changeable ? (byte)0 : (byte)0x04; // WCE: writes are cached until SYNCHRONIZE CACHE or FUA
            at += 0x14;
        }
        if (page is ControlPage or AllPages)
        {
            r[at] = ControlPage;
            r[at + 1] = 0x0A;
            r[at + 3] = changeable ? (byte)0 : (byte)0x10; // queue algorithm modifier 1: unrestricted reordering
            if (!changeable)
            {
                BinaryPrimitives.WriteUInt16BigEndian(r[(at + 8)..], 0xFFFF); // busy timeout: unlimited
            }
            at += 0x0C;
        }
        if (page is InformationalExceptionsPage or AllPages)
        {
            r[at] = InformationalExceptionsPage;
            r[at + 1] = 0x0A;
            at += 0x0C;
        }
        return at == 0 ? -1 : at;
    }
}

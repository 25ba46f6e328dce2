using System.Buffers.Binary;
using System.Text;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>The commands that describe the unit: INQUIRY and its VPD pages, REPORT LUNS, READ CAPACITY, REQUEST SENSE.</summary>
internal sealed partial class ScsiLogicalUnit
{
    private const int ScratchBytes = 1024;
    private const byte PeripheralDirectAccess = 0x00;
    /// <summary>Peripheral qualifier 3, type 0x1f: "no logical unit here" for INQUIRY on a LUN that does not exist.</summary>
    private const byte PeripheralNoUnit = 0x7F;
    private static readonly byte[] VpdPages = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

    /// <summary>Copies a response, cut to the allocation length and to what the initiator expects; the transfer length is the shorter of response and allocation.</summary>
    private static ScsiResult Respond(ReadOnlySpan<byte> response, int allocationLength, Span<byte> dataIn)
    {
        int transfer = Math.Min(response.Length, allocationLength);
        response[..Math.Min(transfer, dataIn.Length)].CopyTo(dataIn);
        return ScsiResult.Good(transfer);
    }

    private static ScsiResult RequestSense(ReadOnlySpan<byte> cdb, bool lunExists, Span<byte> dataIn)
    {
        // Sense is always returned with the failing command (autosense), so nothing is pending here.
        var sense = lunExists ? SenseData.None : SenseData.LogicalUnitNotSupported;
        Span<byte> response = stackalloc byte[SenseData.FixedBytes];
        int length = (cdb[1] & 0x01) != 0 ? sense.WriteDescriptor(response) : sense.WriteFixed(response);
        return Respond(response[..length], cdb[4], dataIn);
    }

    private ScsiResult Inquiry(ReadOnlySpan<byte> cdb, bool lunExists, Span<byte> dataIn)
    {
        bool vitalProductData = (cdb[1] & 0x01) != 0;
        byte page = cdb[2];
        int allocation = BinaryPrimitives.ReadUInt16BigEndian(cdb[3..]);
        if ((cdb[1] & 0x02) != 0 || (!vitalProductData && page != 0))
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb); // CmdDt is obsolete; a page code needs EVPD
        }
        Span<byte> r = stackalloc byte[ScratchBytes];
        r.Clear();
        r[0] = lunExists ? PeripheralDirectAccess : PeripheralNoUnit;
        int length = vitalProductData ? VitalProductData(page, r) : StandardInquiry(r);
        return length < 0 ? ScsiResult.Check(SenseData.InvalidFieldInCdb) : Respond(r[..length], allocation, dataIn);
    }

    private static int StandardInquiry(Span<byte> r)
    {
        const int length = 66;
        r[2] = 0x06; // SPC-4
        r[3] = 0x12; // HISUP, response data format 2
        r[4] = length - 5;
        r[7] = 0x02; // CMDQUE: tagged commands
        Ascii(r.Slice(8, 8), "CAIRN");
        Ascii(r.Slice(16, 16), "Cairn volume");
        Ascii(r.Slice(32, 4), "0001");
        // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
        BinaryPrimitives.WriteUInt16BigEndian(r[58..], 0x00A0);
        BinaryPrimitives.WriteUInt16BigEndian(r[60..], 0x0960);
        BinaryPrimitives.WriteUInt16BigEndian(r[62..], 0x0460);
        BinaryPrimitives.WriteUInt16BigEndian(r[64..], 0x04C0);
        return length;
    }

    /// <summary>Writes a VPD page after the peripheral byte; returns its length, or -1 for a page we do not have.</summary>
    private int VitalProductData(byte page, Span<byte> r)
    {
        r[1] = page;
        int body = page switch
        {
            0x00 => Copy(VpdPages, r[4..]),
            0x80 => Ascii(r.Slice(4, 16), Convert.ToHexString(_identity, 0, 8)),
            0x83 => DeviceIdentification(r[4..]),
            0xB0 => BlockLimits(r[4..]),
            0xB1 => BlockDeviceCharacteristics(r[4..]),
            0xB2 => LogicalBlockProvisioning(r[4..]),
            _ => -1,
        };
        if (body < 0)
        {
            return -1;
        }
        BinaryPrimitives.WriteUInt16BigEndian(r[2..], (ushort)body);
        return 4 + body;
    }

    private int DeviceIdentification(Span<byte> r)
    {
        int at = 0;
        // NAA 3 ("locally assigned", 8 bytes): 60 bits of the export name's hash, stable across nodes and restarts.
        var naa = Designator(r, ref at, codeSet: 1, typeAndAssociation: 0x03, length: 8);
        _identity.AsSpan(0, 8).CopyTo(naa);
        naa[0] = (byte)(0x30 | (naa[0] & 0x0F));
        // T10 vendor ID: vendor "CAIRN" then the export name.
        string t10 = "CAIRN   " + _exportName;
        int t10Bytes = Math.Min(Encoding.ASCII.GetByteCount(t10), 200);
        Ascii(Designator(r, ref at, codeSet: 2, typeAndAssociation: 0x01, length: t10Bytes), t10);
        // Relative target port 1 and the target's iSCSI name (association: target port / target device, PIV, protocol iSCSI).
        var port = Designator(r, ref at, codeSet: 0x51, typeAndAssociation: 0x94, length: 4);
        port[3] = 1;
        int nameBytes = Math.Min(Bhs4(Encoding.UTF8.GetByteCount(_targetName) + 1), 224);
        var name = Designator(r, ref at, codeSet: 0x53, typeAndAssociation: 0xA8, length: nameBytes);
        name.Clear();
        Encoding.UTF8.GetBytes(_targetName.AsSpan(0, Math.Min(_targetName.Length, nameBytes - 1)), name);
        return at;
    }

    private static int Bhs4(int length) => (length + 3) & ~3;

    private static Span<byte> Designator(Span<byte> r, ref int at, byte codeSet, byte typeAndAssociation, int length)
    {
        r[at] = codeSet;
        r[at + 1] = typeAndAssociation;
        r[at + 3] = (byte)length;
        var value = r.Slice(at + 4, length);
        at += 4 + length;
        return value;
    }

    private static int BlockLimits(Span<byte> r)
    {
        r[0] = 0x01; // WSNZ: WRITE SAME with zero blocks is refused
        BinaryPrimitives.WriteUInt16BigEndian(r[2..], PreferredGranularityBlocks); // optimal transfer granularity
        BinaryPrimitives.WriteUInt32BigEndian(r[4..], MaxTransferBlocks);
        BinaryPrimitives.WriteUInt32BigEndian(r[8..], 2048); // optimal transfer: 1 MiB
        BinaryPrimitives.WriteUInt32BigEndian(r[16..], MaxUnmapBlocks);
        BinaryPrimitives.WriteUInt32BigEndian(r[20..], MaxUnmapDescriptors);
        BinaryPrimitives.WriteUInt32BigEndian(r[24..], PreferredGranularityBlocks); // optimal unmap granularity
        BinaryPrimitives.WriteUInt32BigEndian(r[28..], 0x8000_0000); // UGAVALID, alignment 0
        BinaryPrimitives.WriteUInt64BigEndian(r[32..], MaxWriteSameBlocks);
        return 0x3C;
    }

    private static int BlockDeviceCharacteristics(Span<byte> r)
    {
        BinaryPrimitives.WriteUInt16BigEndian(r, 0x0001); // non-rotating medium
        return 0x3C;
    }

    private static int LogicalBlockProvisioning(Span<byte> r)
    {
        r[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU (UNMAP), LBPWS, LBPWS10, LBPRZ=1: unmapped blocks read as zeros
        r[2] = 0x02; // thin provisioned
        return 4;
    }

    private static ScsiResult ReportLuns(ReadOnlySpan<byte> cdb, Span<byte> dataIn)
    {
        uint allocation = BinaryPrimitives.ReadUInt32BigEndian(cdb[6..]);
        if (allocation < 16 || cdb[2] > 2)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        Span<byte> r = stackalloc byte[16];
        r.Clear();
        r[3] = 8; // one LUN: 0
        return Respond(r, (int)Math.Min(allocation, int.MaxValue), dataIn);
    }

    private ScsiResult ReadCapacity10(Span<byte> dataIn)
    {
        Span<byte> r = stackalloc byte[8];
        ulong last = BlockCount - 1;
        BinaryPrimitives.WriteUInt32BigEndian(r, last > uint.MaxValue ? uint.MaxValue : (uint)last); // 0xffffffff: use READ CAPACITY 16
        BinaryPrimitives.WriteUInt32BigEndian(r[4..], BlockBytes);
        return Respond(r, r.Length, dataIn);
    }

    private ScsiResult ServiceActionIn(ReadOnlySpan<byte> cdb, Span<byte> dataIn)
    {
        if ((cdb[1] & 0x1f) != ScsiOpcode.ReadCapacity16ServiceAction)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        Span<byte> r = stackalloc byte[32];
        r.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(r, BlockCount - 1);
        BinaryPrimitives.WriteUInt32BigEndian(r[8..], BlockBytes);
        r[13] = PhysicalBlockExponent;
        r[14] = 0x80 | 0x40; // LBPME: thin provisioned; LBPRZ: unmapped blocks read as zeros
        return Respond(r, (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(cdb[10..]), int.MaxValue), dataIn);
    }

    private static int Copy(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        source.CopyTo(destination);
        return source.Length;
    }

    /// <summary>Writes ASCII left-aligned and space-padded, as SCSI identification fields are.</summary>
    private static int Ascii(Span<byte> destination, string text)
    {
        destination.Fill((byte)' ');
        for (int i = 0; i < Math.Min(text.Length, destination.Length); i++)
        {
            destination[i] = text[i] is >= ' ' and <= '~' ? (byte)text[i] : (byte)'_';
        }
        return destination.Length;
    }
}

using System.Buffers.Binary;
using System.Text;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>What PERSISTENT RESERVE IN reports (SPC-4 §6.16); called under the lock.</summary>
internal sealed partial class PersistentReservations
{
    private byte[] ReadKeys()
    {
        var r = new byte[8 + (8 * _keys.Count)];
        BinaryPrimitives.WriteUInt32BigEndian(r, _generation);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), (uint)(8 * _keys.Count));
        int at = 8;
        foreach (ulong key in _keys.Values)
        {
            BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(at), key);
            at += 8;
        }
        return r;
    }

    private byte[] ReadReservation()
    {
        var r = new byte[_type == ReservationType.None ? 8 : 24];
        BinaryPrimitives.WriteUInt32BigEndian(r, _generation);
        if (_type is var type and not ReservationType.None)
        {
            BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), 16);
            // All-registrants reservations report key 0 (SPC-4 §6.16.3).
            ulong key = _holder is null ? 0 : _keys[_holder];
            BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), key);
            r[21] = (byte)type; // scope 0: logical unit
        }
        return r;
    }

    private static byte[] ReportCapabilities()
    {
        var r = new byte[8];
        r[1] = 8;
        r[3] = 0x80; // TMV: the type mask below is valid; CRH, SIP_C, ATP_C, PTPL_C all 0
        r[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
        r[5] = 0x01; // EX_AC_AR
        return r;
    }

    /// <summary>READ FULL STATUS: one descriptor per registration with the initiator's iSCSI TransportID (SPC-4 §7.6.4.2).</summary>
    private byte[] ReadFullStatus()
    {
        var descriptors = new List<byte[]>();
        foreach (var (nexus, key) in _keys)
        {
            byte[] transportId = IscsiTransportId(nexus);
            var d = new byte[24 + transportId.Length];
            BinaryPrimitives.WriteUInt64BigEndian(d, key);
            if (IsHolder(nexus))
            {
                d[12] = 0x01; // R_HOLDER
                d[13] = (byte)_type;
            }
            BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(18), 1); // relative target port 1
            BinaryPrimitives.WriteUInt32BigEndian(d.AsSpan(20), (uint)transportId.Length);
            transportId.CopyTo(d, 24);
            descriptors.Add(d);
        }
        int length = descriptors.Sum(d => d.Length);
        var r = new byte[8 + length];
        BinaryPrimitives.WriteUInt32BigEndian(r, _generation);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), (uint)length);
        int at = 8;
        foreach (var d in descriptors)
        {
            d.CopyTo(r, at);
            at += d.Length;
        }
        return r;
    }

    /// <summary>Format 01b (name with ISID): "IQN,i,0xISID", NUL-terminated, padded to a multiple of 4, at least 24 bytes.</summary>
    private static byte[] IscsiTransportId(string initiatorPort)
    {
        int nameBytes = Encoding.UTF8.GetByteCount(initiatorPort) + 1;
        int padded = Math.Max(20, (nameBytes + 3) & ~3);
        var id = new byte[4 + padded];
        id[0] = 0x40 | 0x05; // format 01b, protocol identifier 5 (iSCSI)
        BinaryPrimitives.WriteUInt16BigEndian(id.AsSpan(2), (ushort)padded);
        Encoding.UTF8.GetBytes(initiatorPort, id.AsSpan(4));
        return id;
    }
}

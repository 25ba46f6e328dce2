namespace Cairn.Frontends.Iscsi.Scsi;

// SCSI-2 reservations (RESERVE/RELEASE (6) and (10), SPC-2 §5.5.1): one I_T nexus holds the whole logical unit; every
// other nexus gets RESERVATION CONFLICT for all but a few descriptive commands. VMware ESXi locks VMFS with these on
// storage without atomic test-and-set. They give way to persistent reservations (a RESERVE while keys are registered
// conflicts), end when the holder's session ends, and are cleared by a logical unit or target reset — how a host that
// took over breaks the lock of one that died.
internal sealed partial class PersistentReservations
{
    /// <summary>The SCSI-2 holder's initiator port; read without the lock first, so commands pay nothing while none is held.</summary>
    private volatile string? _scsi2Holder;

    /// <summary>True when another nexus holds a SCSI-2 reservation that this command may not pass.</summary>
    public bool Scsi2Conflicts(string nexus, byte opcode)
    {
        string? holder = _scsi2Holder;
        return holder is not null && holder != nexus
            && opcode is not (ScsiOpcode.Inquiry or ScsiOpcode.ReportLuns or ScsiOpcode.RequestSense or ScsiOpcode.Release6 or ScsiOpcode.Release10);
    }

    /// <summary>RESERVE (6)/(10): the whole unit for this nexus (extents and third-party reservations are obsolete and refused).</summary>
    public ScsiResult ReserveScsi2(ReadOnlySpan<byte> cdb, string nexus)
    {
        if ((cdb[1] & 0x13) != 0)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb); // LongID/3rdPty/Extent
        }
        lock (_lock)
        {
            if (_type != ReservationType.None || _keys.Count > 0 || (_scsi2Holder is { } holder && holder != nexus))
            {
                return Conflict;
            }
            _scsi2Holder = nexus;
            return ScsiResult.Good();
        }
    }

    /// <summary>RELEASE (6)/(10): ends this nexus's reservation; from anyone else it succeeds and changes nothing (SPC-2).</summary>
    public ScsiResult ReleaseScsi2(string nexus)
    {
        lock (_lock)
        {
            if (_scsi2Holder == nexus)
            {
                _scsi2Holder = null;
            }
            return ScsiResult.Good();
        }
    }

    /// <summary>A logical unit or target reset clears the SCSI-2 reservation (persistent ones survive resets).</summary>
    public void ResetScsi2()
    {
        lock (_lock)
        {
            _scsi2Holder = null;
        }
    }

    /// <summary>The nexus's session ended: its SCSI-2 reservation goes with it.</summary>
    public void NexusLost(string nexus)
    {
        lock (_lock)
        {
            if (_scsi2Holder == nexus)
            {
                _scsi2Holder = null;
            }
        }
    }
}

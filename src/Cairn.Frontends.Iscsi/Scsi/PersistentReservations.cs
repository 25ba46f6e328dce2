using System.Buffers.Binary;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>The persistent reservation types of SPC-4 §5.13.1 (the TYPE field).</summary>
internal enum ReservationType : byte
{
    /// <summary>No reservation (not a TYPE value on the wire).</summary>
    None = 0,
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

/// <summary>How a command touches the medium, which decides whether a reservation held elsewhere blocks it.</summary>
internal enum MediumAccess
{
    /// <summary>Allowed whatever the reservation (INQUIRY, REPORT LUNS, READ CAPACITY, TEST UNIT READY, ...).</summary>
    None,
    Read,
    Write,
}

/// <summary>
/// The persistent reservation state of one logical unit (SPC-4 §5.13), shared by every session to it: registered keys
/// per I_T nexus and at most one reservation. An I_T nexus is named by its initiator port, "IQN,i,0xISID" (the
/// target has one port). Kept in memory only: nothing survives a restart, so APTPL is refused (PTPL_C = 0).
/// Thread-safe: sessions run commands concurrently.
/// </summary>
internal sealed partial class PersistentReservations
{
    private const int ParameterListBytes = 24;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, ulong> _keys = new(StringComparer.Ordinal);
    private uint _generation;
    /// <summary>The holder's initiator port, or null for the all-registrants types (every registrant holds it).</summary>
    private string? _holder;
    /// <summary>Written under the lock; read without it first, so commands pay nothing while nothing is reserved.</summary>
    private volatile ReservationType _type;

    /// <summary>True when a reservation held by someone else forbids this nexus the access (RESERVATION CONFLICT).</summary>
    public bool Conflicts(string nexus, MediumAccess access)
    {
        if (access == MediumAccess.None)
        {
            return false;
        }
        if (_type == ReservationType.None)
        {
            return false;
        }
        lock (_lock)
        {
            var type = _type;
            if (type == ReservationType.None || IsHolder(nexus))
            {
                return false;
            }
            bool registered = _keys.ContainsKey(nexus);
            return type switch
            {
                ReservationType.WriteExclusive => access == MediumAccess.Write,
                ReservationType.ExclusiveAccess => true,
                ReservationType.WriteExclusiveRegistrantsOnly or ReservationType.WriteExclusiveAllRegistrants => !registered && access == MediumAccess.Write,
                _ => !registered,
            };
        }
    }

    /// <summary>PERSISTENT RESERVE IN: READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL STATUS.</summary>
    public ScsiResult In(ReadOnlySpan<byte> cdb, Span<byte> dataIn)
    {
        int allocation = BinaryPrimitives.ReadUInt16BigEndian(cdb[7..]);
        lock (_lock)
        {
            byte[]? response = (cdb[1] & 0x1f) switch
            {
                0 => ReadKeys(),
                1 => ReadReservation(),
                2 => ReportCapabilities(),
                3 => ReadFullStatus(),
                _ => null,
            };
            if (response is null)
            {
                return ScsiResult.Check(SenseData.InvalidFieldInCdb);
            }
            int transfer = Math.Min(response.Length, allocation);
            response.AsSpan(0, Math.Min(transfer, dataIn.Length)).CopyTo(dataIn);
            return ScsiResult.Good(transfer);
        }
    }

    /// <summary>PERSISTENT RESERVE OUT from <paramref name="nexus"/>. REGISTER AND MOVE is not supported.</summary>
    public ScsiResult Out(ReadOnlySpan<byte> cdb, string nexus, ReadOnlySpan<byte> parameters)
    {
        byte action = (byte)(cdb[1] & 0x1f);
        uint listLength = BinaryPrimitives.ReadUInt32BigEndian(cdb[5..]);
        if (action > 6)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInCdb);
        }
        if (listLength != ParameterListBytes || parameters.Length < ParameterListBytes)
        {
            return ScsiResult.Check(SenseData.ParameterListLengthError);
        }
        if ((parameters[20] & 0x0D) != 0)
        {
            return ScsiResult.Check(SenseData.InvalidFieldInParameterList); // SPEC_I_PT, ALL_TG_PT, APTPL: not supported
        }
        ulong key = BinaryPrimitives.ReadUInt64BigEndian(parameters);
        ulong serviceKey = BinaryPrimitives.ReadUInt64BigEndian(parameters[8..]);
        lock (_lock)
        {
            if (action is 0 or 6)
            {
                return Register(nexus, key, serviceKey, ignoreExisting: action == 6);
            }
            if (!_keys.TryGetValue(nexus, out ulong registered) || registered != key)
            {
                return Conflict;
            }
            if (action == 3)
            {
                Clear();
                return ScsiResult.Good(ParameterListBytes);
            }
            if ((cdb[2] >> 4) != 0 || (cdb[2] & 0x0f) == 0 || !Enum.IsDefined((ReservationType)(cdb[2] & 0x0f)))
            {
                return ScsiResult.Check(SenseData.InvalidFieldInCdb); // only LU_SCOPE, only the six types
            }
            var type = (ReservationType)(cdb[2] & 0x0f);
            return action switch
            {
                1 => Reserve(nexus, type),
                2 => Release(nexus, type),
                _ => Preempt(nexus, serviceKey, type),
            };
        }
    }

    private static ScsiResult Conflict => new(ScsiStatus.ReservationConflict, SenseData.None, 0);

    private static bool IsAllRegistrants(ReservationType type) =>
        type is ReservationType.WriteExclusiveAllRegistrants or ReservationType.ExclusiveAccessAllRegistrants;

    private bool IsHolder(string nexus) =>
        _type != ReservationType.None && (IsAllRegistrants(_type) ? _keys.ContainsKey(nexus) : _holder == nexus);

    private ScsiResult Register(string nexus, ulong key, ulong serviceKey, bool ignoreExisting)
    {
        bool registered = _keys.TryGetValue(nexus, out ulong current);
        if (!ignoreExisting && (registered ? current != key : key != 0))
        {
            return Conflict;
        }
        if (serviceKey != 0)
        {
            _keys[nexus] = serviceKey;
            _generation++;
        }
        else if (registered)
        {
            Unregister(nexus);
            _generation++;
        }
        return ScsiResult.Good(ParameterListBytes);
    }

    /// <summary>Removes a registration; a reservation goes with its holder (for all-registrants, with the last registrant).</summary>
    private void Unregister(string nexus)
    {
        bool held = IsHolder(nexus);
        _keys.Remove(nexus);
        if (held && (_holder is not null || _keys.Count == 0))
        {
            _holder = null;
            _type = ReservationType.None;
        }
    }

    private ScsiResult Reserve(string nexus, ReservationType type)
    {
        if (_type is var existing and not ReservationType.None)
        {
            return IsHolder(nexus) && existing == type ? ScsiResult.Good(ParameterListBytes) : Conflict;
        }
        _type = type;
        _holder = IsAllRegistrants(type) ? null : nexus;
        return ScsiResult.Good(ParameterListBytes);
    }

    private ScsiResult Release(string nexus, ReservationType type)
    {
        var existing = _type;
        if (existing == ReservationType.None || !IsHolder(nexus))
        {
            return ScsiResult.Good(ParameterListBytes); // nothing of ours to release
        }
        if (existing != type)
        {
            return ScsiResult.Check(SenseData.InvalidReleaseOfPersistentReservation);
        }
        _type = ReservationType.None;
        _holder = null;
        return ScsiResult.Good(ParameterListBytes);
    }

    private void Clear()
    {
        _keys.Clear();
        _type = ReservationType.None;
        _holder = null;
        _generation++;
    }

    /// <summary>
    /// PREEMPT (SPC-4 §5.13.11.2.4): removes the registrations with <paramref name="serviceKey"/>; when that names the
    /// holder (or, for an all-registrants reservation, with key 0 for everybody else) the caller takes the reservation.
    /// </summary>
    private ScsiResult Preempt(string nexus, ulong serviceKey, ReservationType type)
    {
        bool allRegistrants = IsAllRegistrants(_type);
        bool takesReservation;
        if (allRegistrants && serviceKey == 0)
        {
            foreach (var other in _keys.Keys.Where(n => n != nexus).ToList())
            {
                _keys.Remove(other);
            }
            takesReservation = true;
        }
        else
        {
            if (serviceKey == 0)
            {
                return ScsiResult.Check(SenseData.InvalidFieldInParameterList);
            }
            takesReservation = !allRegistrants && _holder is not null && _keys.GetValueOrDefault(_holder) == serviceKey;
            var preempted = _keys.Where(k => k.Value == serviceKey && k.Key != nexus).Select(k => k.Key).ToList();
            if (preempted.Count == 0 && !takesReservation)
            {
                return Conflict;
            }
            foreach (var other in preempted)
            {
                _keys.Remove(other);
            }
            if (allRegistrants && _keys.Count == 0)
            {
                _type = ReservationType.None;
            }
        }
        if (takesReservation)
        {
            _type = type;
            _holder = IsAllRegistrants(type) ? null : nexus;
        }
        _generation++;
        return ScsiResult.Good(ParameterListBytes);
    }
}

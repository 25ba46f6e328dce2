using System.Buffers.Binary;
using Cairn.Frontends.Iscsi.Scsi;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>
/// Persistent reservations (SPC-4 §5.13) through three sessions (I_T nexuses A, B, C) to one logical unit sharing
/// one reservation state, as the server wires them.
/// </summary>
public sealed class PersistentReservationTests
{
    private const byte Conflict = ScsiStatus.ReservationConflict;
    private readonly RamBlockDevice _disk = new(1 << 20);
    private readonly PersistentReservations _state = new();
    private readonly ScsiLogicalUnit _a, _b, _c;

    public PersistentReservationTests()
    {
        _a = Session("iqn.2026-11.test:a,i,0x400000000001");
        _b = Session("iqn.2026-11.test:b,i,0x400000000002");
        _c = Session("iqn.2026-11.test:c,i,0x400000000003");
    }

    private ScsiLogicalUnit Session(string nexus) => new(_disk, "vol", "iqn.2026-11.io.cairn:vol", _state, nexus);

    private static async Task<ScsiResult> Out(ScsiLogicalUnit unit, byte action, ulong key, ulong serviceKey, ReservationType type = 0, byte flags = 0, int length = 24)
    {
        var cdb = new byte[10];
        cdb[0] = 0x5F;
        cdb[1] = action;
        cdb[2] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(5), (uint)length);
        var parameters = new byte[24];
        BinaryPrimitives.WriteUInt64BigEndian(parameters, key);
        BinaryPrimitives.WriteUInt64BigEndian(parameters.AsSpan(8), serviceKey);
        parameters[20] = flags;
        return await unit.ExecuteAsync(cdb, true, parameters, Memory<byte>.Empty, CancellationToken.None);
    }

    private static Task<ScsiResult> Register(ScsiLogicalUnit unit, ulong key) => Out(unit, 0, 0, key);
    private static Task<ScsiResult> Reserve(ScsiLogicalUnit unit, ulong key, ReservationType type) => Out(unit, 1, key, 0, type);

    private static async Task<byte[]> In(ScsiLogicalUnit unit, byte action)
    {
        var data = new byte[512];
        var r = await unit.ExecuteAsync(new byte[] { 0x5E, action, 0, 0, 0, 0, 0, 2, 0, 0 }, true, ReadOnlyMemory<byte>.Empty, data, CancellationToken.None);
        Assert.Equal(ScsiStatus.Good, r.Status);
        return data;
    }

    private static async Task<byte> Read(ScsiLogicalUnit unit) =>
        (await unit.ExecuteAsync(new byte[] { 0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0 }, true, ReadOnlyMemory<byte>.Empty, new byte[512], CancellationToken.None)).Status;

    private static async Task<byte> Write(ScsiLogicalUnit unit) =>
        (await unit.ExecuteAsync(new byte[] { 0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0 }, true, new byte[512], Memory<byte>.Empty, CancellationToken.None)).Status;

    private static async Task<byte> Describe(ScsiLogicalUnit unit) =>
        (await unit.ExecuteAsync(new byte[] { 0x12, 0, 0, 0, 36, 0 }, true, ReadOnlyMemory<byte>.Empty, new byte[36], CancellationToken.None)).Status;

    [Fact]
    public async Task Write_exclusive_lets_others_read_but_not_write_and_read_keys_lists_every_registration()
    {
        Assert.Equal(ScsiStatus.Good, (await Register(_a, 0xA)).Status);
        Assert.Equal(ScsiStatus.Good, (await Register(_b, 0xB)).Status);
        Assert.Equal(ScsiStatus.Good, (await Reserve(_a, 0xA, ReservationType.WriteExclusive)).Status);

        Assert.Equal(ScsiStatus.Good, await Write(_a));
        Assert.Equal(ScsiStatus.Good, await Read(_b));
        Assert.Equal(Conflict, await Write(_b));
        Assert.Equal(Conflict, await Write(_c));

        var keys = await In(_a, 0);
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32BigEndian(keys)); // two registrations; RESERVE does not count
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32BigEndian(keys.AsSpan(4)));
        Assert.Equal(new ulong[] { 0xA, 0xB }, new[] { BinaryPrimitives.ReadUInt64BigEndian(keys.AsSpan(8)), BinaryPrimitives.ReadUInt64BigEndian(keys.AsSpan(16)) }.Order());

        var reservation = await In(_b, 1);
        Assert.Equal(16u, BinaryPrimitives.ReadUInt32BigEndian(reservation.AsSpan(4)));
        Assert.Equal(0xAul, BinaryPrimitives.ReadUInt64BigEndian(reservation.AsSpan(8)));
        Assert.Equal((byte)ReservationType.WriteExclusive, reservation[21]);
    }

    [Fact]
    public async Task Exclusive_access_blocks_reads_too_but_never_inquiry()
    {
        await Register(_a, 1);
        await Reserve(_a, 1, ReservationType.ExclusiveAccess);
        Assert.Equal(Conflict, await Read(_b));
        Assert.Equal(Conflict, await Write(_b));
        Assert.Equal(ScsiStatus.Good, await Describe(_b));
        Assert.Equal(ScsiStatus.Good, await Read(_a));
    }

    [Fact]
    public async Task Registrants_only_types_let_every_registrant_in_and_keep_others_out()
    {
        await Register(_a, 1);
        await Register(_b, 2);
        await Reserve(_a, 1, ReservationType.WriteExclusiveRegistrantsOnly);
        Assert.Equal(ScsiStatus.Good, await Write(_b));
        Assert.Equal(ScsiStatus.Good, await Read(_c));
        Assert.Equal(Conflict, await Write(_c));

        await Out(_a, 2, 1, 0, ReservationType.WriteExclusiveRegistrantsOnly); // RELEASE
        await Reserve(_a, 1, ReservationType.ExclusiveAccessRegistrantsOnly);
        Assert.Equal(ScsiStatus.Good, await Read(_b));
        Assert.Equal(Conflict, await Read(_c));
    }

    [Fact]
    public async Task All_registrants_reservation_reports_key_zero_and_ends_with_the_last_registrant()
    {
        await Register(_a, 1);
        await Register(_b, 2);
        await Reserve(_a, 1, ReservationType.ExclusiveAccessAllRegistrants);
        Assert.Equal(ScsiStatus.Good, await Write(_b)); // every registrant holds it
        Assert.Equal(Conflict, await Read(_c));
        var reservation = await In(_c, 1);
        Assert.Equal(0ul, BinaryPrimitives.ReadUInt64BigEndian(reservation.AsSpan(8)));
        Assert.Equal((byte)ReservationType.ExclusiveAccessAllRegistrants, reservation[21]);

        await Out(_a, 0, 1, 0); // unregister A: B still holds it
        Assert.Equal(Conflict, await Read(_c));
        await Out(_b, 0, 2, 0); // the last registrant leaves: the reservation goes
        Assert.Equal(ScsiStatus.Good, await Write(_c));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian((await In(_c, 1)).AsSpan(4)));
    }

    [Fact]
    public async Task Wrong_keys_and_unregistered_nexuses_get_reservation_conflict()
    {
        await Register(_a, 1);
        Assert.Equal(Conflict, (await Out(_a, 0, 7, 9)).Status); // REGISTER with a key that is not ours
        Assert.Equal(Conflict, (await Reserve(_b, 0, ReservationType.WriteExclusive)).Status); // B is not registered
        Assert.Equal(Conflict, (await Reserve(_a, 2, ReservationType.WriteExclusive)).Status);
        Assert.Equal(ScsiStatus.Good, (await Out(_a, 6, 12345, 5)).Status); // REGISTER AND IGNORE EXISTING KEY
        Assert.Equal(ScsiStatus.Good, (await Reserve(_a, 5, ReservationType.WriteExclusive)).Status);
        Assert.Equal(Conflict, (await Reserve(_a, 5, ReservationType.ExclusiveAccess)).Status); // another type while holding
    }

    [Fact]
    public async Task Bad_parameters_get_the_sense_spc4_names()
    {
        await Register(_a, 1);
        await Reserve(_a, 1, ReservationType.WriteExclusive);
        var release = await Out(_a, 2, 1, 0, ReservationType.ExclusiveAccess);
        Assert.Equal(SenseData.InvalidReleaseOfPersistentReservation, release.Sense);
        Assert.Equal(SenseData.InvalidFieldInParameterList, (await Out(_b, 0, 0, 3, flags: 0x01)).Sense); // APTPL: nothing persists here
        Assert.Equal(SenseData.ParameterListLengthError, (await Out(_b, 0, 0, 3, length: 16)).Sense);
        Assert.Equal(SenseData.InvalidFieldInCdb, (await Out(_a, 1, 1, 0, (ReservationType)2)).Sense);
        Assert.Equal(SenseData.InvalidFieldInCdb, (await Out(_a, 7, 1, 0)).Sense); // REGISTER AND MOVE
    }

    [Fact]
    public async Task Preempt_removes_the_holder_and_hands_the_reservation_over()
    {
        await Register(_a, 1);
        await Register(_b, 2);
        await Reserve(_a, 1, ReservationType.ExclusiveAccess);
        Assert.Equal(Conflict, (await Out(_b, 4, 2, 99, ReservationType.WriteExclusive)).Status); // nobody has key 99

        Assert.Equal(ScsiStatus.Good, (await Out(_b, 4, 2, 1, ReservationType.WriteExclusive)).Status);
        Assert.Equal(Conflict, await Write(_a)); // A lost its registration and the reservation
        Assert.Equal(ScsiStatus.Good, await Read(_a));
        Assert.Equal(ScsiStatus.Good, await Write(_b));
        var keys = await In(_a, 0);
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32BigEndian(keys.AsSpan(4)));
        Assert.Equal(2ul, BinaryPrimitives.ReadUInt64BigEndian(keys.AsSpan(8)));
        Assert.Equal(Conflict, (await Out(_a, 0, 1, 5)).Status); // A's old key is gone
    }

    [Fact]
    public async Task Clear_drops_every_registration_and_the_reservation()
    {
        await Register(_a, 1);
        await Register(_b, 2);
        await Reserve(_a, 1, ReservationType.ExclusiveAccess);
        Assert.Equal(ScsiStatus.Good, (await Out(_b, 3, 2, 0)).Status);
        Assert.Equal(ScsiStatus.Good, await Write(_c));
        var keys = await In(_c, 0);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(keys.AsSpan(4)));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(keys)); // generation: two REGISTERs and the CLEAR
    }

    [Fact]
    public async Task Report_capabilities_and_full_status_describe_what_is_supported()
    {
        var caps = await In(_a, 2);
        Assert.Equal(8, BinaryPrimitives.ReadUInt16BigEndian(caps));
        Assert.Equal(0, caps[2] & 0x01); // PTPL_C: reservations do not persist through a restart
        Assert.Equal(0xEA, caps[4]);
        Assert.Equal(0x01, caps[5]);

        await Register(_a, 1);
        await Reserve(_a, 1, ReservationType.WriteExclusive);
        var full = await In(_b, 3);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(full.AsSpan(4));
        Assert.Equal(1ul, BinaryPrimitives.ReadUInt64BigEndian(full.AsSpan(8)));
        Assert.Equal(0x01, full[8 + 12]); // R_HOLDER
        Assert.Equal(0x45, full[8 + 24]); // TransportID: iSCSI, name with ISID
        string transportId = System.Text.Encoding.UTF8.GetString(full, 8 + 28, (int)length - 28).TrimEnd('\0');
        Assert.Equal("iqn.2026-11.test:a,i,0x400000000001", transportId);
    }
}

/// <summary>SCSI-2 RESERVE/RELEASE (6) and (10), as VMware ESXi uses them to lock VMFS without atomic test-and-set.</summary>
public sealed class Scsi2ReservationTests
{
    private readonly RamBlockDevice _disk = new(1 << 20);
    private readonly PersistentReservations _state = new();

    private ScsiLogicalUnit Session(string nexus) => new(_disk, "vol", "iqn.2026-11.io.cairn:vol", _state, nexus);

    private static async Task<byte> Run(ScsiLogicalUnit unit, params byte[] cdb)
    {
        bool writes = cdb[0] == 0x2A;
        var result = await unit.ExecuteAsync(cdb, true, writes ? new byte[512] : ReadOnlyMemory<byte>.Empty, new byte[512], CancellationToken.None);
        return result.Status;
    }

    private static readonly byte[] Reserve6 = [0x16, 0, 0, 0, 0, 0];
    private static readonly byte[] Release6 = [0x17, 0, 0, 0, 0, 0];
    private static readonly byte[] Reserve10 = [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    private static readonly byte[] Read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    private static readonly byte[] Write10 = [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    private static readonly byte[] Inquiry = [0x12, 0, 0, 0, 36, 0];
    private static readonly byte[] TestUnitReady = [0x00, 0, 0, 0, 0, 0];

    [Fact]
    public async Task The_holder_has_the_unit_and_everyone_else_gets_conflicts_until_it_releases()
    {
        var a = Session("iqn.2026-11.test:a,i,0x1");
        var b = Session("iqn.2026-11.test:b,i,0x2");

        Assert.Equal(ScsiStatus.Good, await Run(a, Reserve6));
        Assert.Equal(ScsiStatus.Good, await Run(a, Reserve10)); // the holder may reserve again
        Assert.Equal(ScsiStatus.Good, await Run(a, Write10));
        Assert.Equal(ScsiStatus.ReservationConflict, await Run(b, Read10));
        Assert.Equal(ScsiStatus.ReservationConflict, await Run(b, Write10));
        Assert.Equal(ScsiStatus.ReservationConflict, await Run(b, TestUnitReady));
        Assert.Equal(ScsiStatus.ReservationConflict, await Run(b, Reserve6));
        Assert.Equal(ScsiStatus.Good, await Run(b, Inquiry));
        Assert.Equal(ScsiStatus.Good, await Run(b, Release6)); // someone else's release changes nothing ...
        Assert.Equal(ScsiStatus.ReservationConflict, await Run(b, Read10)); // ... as this shows

        Assert.Equal(ScsiStatus.Good, await Run(a, Release6));
        Assert.Equal(ScsiStatus.Good, await Run(b, Reserve6));
        Assert.Equal(ScsiStatus.ReservationConflict, await Run(a, Write10));
    }

    [Fact]
    public async Task A_reset_or_the_holder_s_session_ending_frees_the_unit()
    {
        var a = Session("iqn.2026-11.test:a,i,0x1");
        var b = Session("iqn.2026-11.test:b,i,0x2");
        await Run(a, Reserve6);

        b.Reset(); // a logical unit reset from the host taking over
        Assert.Equal(ScsiStatus.Good, await Run(b, Reserve6));

        b.EndNexus();
        Assert.Equal(ScsiStatus.Good, await Run(a, Write10));
    }

    [Fact]
    public async Task Reserve_gives_way_to_persistent_reservations_and_refuses_obsolete_fields()
    {
        var a = Session("iqn.2026-11.test:a,i,0x1");
        var register = new byte[10];
        register[0] = 0x5F;
        register[8] = 24;
        var parameters = new byte[24];
        parameters[15] = 7; // service action key 7
        Assert.Equal(ScsiStatus.Good, (await a.ExecuteAsync(register, true, parameters, Memory<byte>.Empty, CancellationToken.None)).Status);

        Assert.Equal(ScsiStatus.ReservationConflict, await Run(a, Reserve6));
        var extent = new byte[] { 0x16, 0x01, 0, 0, 0, 0 };
        Assert.Equal(ScsiStatus.CheckCondition, await Run(Session("iqn.2026-11.test:c,i,0x3"), extent));
    }
}

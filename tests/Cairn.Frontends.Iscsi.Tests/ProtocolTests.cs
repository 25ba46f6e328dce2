using System.Buffers.Binary;
using Cairn.Frontends.Iscsi.Login;
using Cairn.Frontends.Iscsi.Pdus;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>The target driven PDU by PDU over loopback, for the paths real initiators rarely take.</summary>
public sealed class ProtocolTests
{
    private const string Disk = ServerHarness.Prefix + "disk";

    private static int Status(TestPdu login) => login.Bhs[36] << 8 | login.Bhs[37];

    private static byte[] Read10(uint lba, ushort blocks)
    {
        var cdb = new byte[10];
        cdb[0] = 0x28;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), blocks);
        return cdb;
    }

    private static byte[] Write10(uint lba, ushort blocks)
    {
        var cdb = Read10(lba, blocks);
        cdb[0] = 0x2A;
        return cdb;
    }

    [Fact]
    public async Task Login_without_an_initiator_name_is_refused_and_the_connection_closed()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        var response = await c.LoginAsync($"TargetName={Disk}|SessionType=Normal");
        Assert.Equal((int)LoginStatus.MissingParameter, Status(response));
        Assert.True(await c.ClosedByTargetAsync());
    }

    [Fact]
    public async Task Login_to_an_unknown_target_is_not_found()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        var response = await c.LoginAsync($"InitiatorName=iqn.x|TargetName={ServerHarness.Prefix}nope");
        Assert.Equal((int)LoginStatus.NotFound, Status(response));
        Assert.Equal(0, h.Catalog.OpenSessions);
    }

    [Fact]
    public async Task Login_refusals_name_authorization_and_authentication_and_the_chap_exchange_holds_the_stage()
    {
        var access = new Cairn.Core.IscsiAccess(["iqn.2026-11.test:client"], new Cairn.Core.ChapCredentials("u", "twelve-bytes"));
        await using var h = await ServerHarness.StartAsync(diskAccess: access);

        await using (var stranger = await IscsiTestClient.ConnectAsync(h.Port))
        {
            var refused = await stranger.LoginAsync($"InitiatorName=iqn.2026-11.test:other|TargetName={Disk}|SessionType=Normal");
            Assert.Equal((int)LoginStatus.AuthorizationFailure, Status(refused));
            Assert.True(await stranger.ClosedByTargetAsync());
        }
        await using (var skipper = await IscsiTestClient.ConnectAsync(h.Port))
        {
            // Straight to the operational stage: no way to authenticate there.
            var refused = await skipper.LoginAsync($"InitiatorName=iqn.2026-11.test:client|TargetName={Disk}|SessionType=Normal");
            Assert.Equal((int)LoginStatus.AuthenticationFailure, Status(refused));
            Assert.True(await skipper.ClosedByTargetAsync());
        }
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        var method = await c.LoginAsync($"InitiatorName=iqn.2026-11.test:client|TargetName={Disk}|AuthMethod=CHAP,None", LoginStage.Security, LoginStage.Operational);
        Assert.Equal(0, Status(method));
        Assert.Equal(0, method.Bhs[1] & 0x80); // T=0: the target keeps the initiator in the security stage
        Assert.Equal("CHAP", TextKeys.Parse(method.Data)!.ToDictionary()["AuthMethod"]);
        var challenge = await c.LoginAsync("CHAP_A=5", LoginStage.Security, LoginStage.Operational);
        Assert.Equal(0, challenge.Bhs[1] & 0x80);
        Assert.StartsWith("0x", TextKeys.Parse(challenge.Data)!.ToDictionary()["CHAP_C"], StringComparison.Ordinal);
        var wrong = await c.LoginAsync("CHAP_N=u|CHAP_R=0x00112233445566778899aabbccddeeff", LoginStage.Security, LoginStage.Operational);
        Assert.Equal((int)LoginStatus.AuthenticationFailure, Status(wrong));
        Assert.True(await c.ClosedByTargetAsync());
        Assert.Equal(0, h.Catalog.OpenSessions); // the export opens only once login succeeds
    }

    [Fact]
    public async Task Login_through_the_security_stage_declares_portal_group_and_receive_limit()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        var security = await c.LoginAsync($"InitiatorName=iqn.x|TargetName={Disk}|AuthMethod=CHAP,None", LoginStage.Security, LoginStage.Operational);
        Assert.Equal(0, Status(security));
        Assert.Equal(0x81, security.Bhs[1]); // T, CSG=0, NSG=1
        var keys = TextKeys.Parse(security.Data)!.ToDictionary();
        Assert.Equal("None", keys["AuthMethod"]);
        Assert.Equal("1", keys["TargetPortalGroupTag"]);

        var operational = await c.LoginAsync("X-cairn.Unknown=1|MaxBurstLength=65536|HeaderDigest=CRC32C");
        Assert.Equal(0, Status(operational));
        Assert.NotEqual(0, LoginResponse.Parse(operational.Bhs).Tsih);
        keys = TextKeys.Parse(operational.Data)!.ToDictionary();
        Assert.Equal("NotUnderstood", keys["X-cairn.Unknown"]);
        Assert.Equal("65536", keys["MaxBurstLength"]);
        Assert.Equal(TargetLimits.MaxRecvDataSegmentLength.ToString(System.Globalization.CultureInfo.InvariantCulture), keys["MaxRecvDataSegmentLength"]);
        Assert.Equal(1, h.Catalog.OpenSessions);
    }

    [Fact]
    public async Task Discovery_answers_send_targets_and_refuses_scsi_commands()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        var login = await c.LoginAsync("InitiatorName=iqn.x|SessionType=Discovery|HeaderDigest=CRC32C,None");
        Assert.Equal(0, Status(login));
        Assert.Equal("None", TextKeys.Parse(login.Data)!.ToDictionary()["HeaderDigest"]);

        var text = new byte[Bhs.Length];
        text[0] = (byte)Opcode.TextRequest;
        text[1] = 0x80;
        Bhs.Put(text, 16, 77u);
        Bhs.Put(text, 20, Bhs.ReservedTag);
        Bhs.Put(text, 24, c.CmdSn++);
        await c.SendAsync(text, "SendTargets=All\0"u8.ToArray());
        var targets = await c.ReceiveAsync();
        Assert.Equal(Opcode.TextResponse, targets.Opcode);
        Assert.Equal(77u, targets.Itt);
        Assert.Contains($"TargetName={Disk}\0TargetAddress=127.0.0.1:{h.Port},1\0", targets.Text);
        Assert.Contains($"TargetName={ServerHarness.Prefix}ro\0", targets.Text);

        await c.SendAsync(IscsiTestClient.ScsiCommand(78, c.CmdSn++, 0, false, false, [0x00, 0, 0, 0, 0, 0]));
        var reject = await c.ReceiveAsync();
        Assert.Equal(Opcode.Reject, reject.Opcode);
        Assert.Equal((byte)RejectReason.ProtocolError, reject.Bhs[2]);
    }

    [Fact]
    public async Task Discovery_answers_the_advertised_host_and_leaves_snapshot_exports_to_nbd()
    {
        await using var h = await ServerHarness.StartAsync(advertisedHost: "10.0.2.2", withSnapshotExport: true);
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        Assert.Equal(0, Status(await c.LoginAsync("InitiatorName=iqn.x|SessionType=Discovery")));

        var text = new byte[Bhs.Length];
        text[0] = (byte)Opcode.TextRequest;
        text[1] = 0x80;
        Bhs.Put(text, 16, 5u);
        Bhs.Put(text, 20, Bhs.ReservedTag);
        Bhs.Put(text, 24, c.CmdSn++);
        await c.SendAsync(text, "SendTargets=All\0"u8.ToArray());
        var targets = await c.ReceiveAsync();

        Assert.Contains($"TargetName={Disk}\0TargetAddress=10.0.2.2:{h.Port},1\0", targets.Text);
        Assert.DoesNotContain("@", targets.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Reads_are_split_by_the_initiators_receive_limit_with_digests_and_exact_residuals()
    {
        await using var h = await ServerHarness.StartAsync();
        new Random(7).NextBytes(h.Disk.Data[..(64 * 1024)]);
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk, "|HeaderDigest=CRC32C|DataDigest=CRC32C|MaxRecvDataSegmentLength=4096|MaxBurstLength=16384");
        Assert.True(c.HeaderDigest && c.DataDigest);

        // 40 blocks (20 KiB) asked while 24 KiB are expected: 20 KiB move and the status reports a 4 KiB underflow.
        await c.SendAsync(IscsiTestClient.ScsiCommand(5, c.CmdSn++, 24 * 1024, true, false, Read10(0, 40)));
        var received = new byte[20 * 1024];
        uint expectedDataSn = 0;
        int offset = 0;
        while (true)
        {
            var pdu = await c.ReceiveAsync();
            Assert.Equal(Opcode.DataIn, pdu.Opcode);
            Assert.Equal(5u, pdu.Itt);
            Assert.Equal(expectedDataSn++, pdu.U32(36));
            Assert.Equal((uint)offset, pdu.U32(40));
            Assert.True(pdu.Data.Length <= 4096, $"a {pdu.Data.Length}-byte Data-In exceeds MaxRecvDataSegmentLength 4096");
            pdu.Data.CopyTo(received, offset);
            offset += pdu.Data.Length;
            bool final = (pdu.Bhs[1] & 0x80) != 0;
            Assert.Equal(final, offset % 16384 == 0 || offset == received.Length); // F ends each MaxBurstLength sequence
            if ((pdu.Bhs[1] & 0x01) != 0)
            {
                Assert.Equal(0x02, pdu.Bhs[1] & 0x06); // U: underflow
                Assert.Equal(4096u, pdu.U32(44));
                break;
            }
        }
        Assert.Equal(received.Length, offset);
        Assert.True(received.AsSpan().SequenceEqual(h.Disk.Data[..received.Length]));
    }

    [Fact]
    public async Task Writes_without_immediate_data_are_solicited_burst_by_burst()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk, "|InitialR2T=Yes|ImmediateData=No|MaxBurstLength=8192|FirstBurstLength=8192");
        var data = new byte[32 * 1024];
        new Random(3).NextBytes(data);

        await c.SendAsync(IscsiTestClient.ScsiCommand(9, c.CmdSn++, (uint)data.Length, false, true, Write10(100, 64)));
        uint r2tSn = 0;
        int asked = 0;
        while (asked < data.Length)
        {
            var r2t = await c.ReceiveAsync();
            Assert.Equal(Opcode.ReadyToTransfer, r2t.Opcode);
            Assert.Equal(r2tSn++, r2t.U32(36));
            uint offset = r2t.U32(40);
            uint length = r2t.U32(44);
            Assert.Equal((uint)asked, offset);
            Assert.Equal(8192u, length);
            // Two Data-Out PDUs per burst, the second with F.
            await c.SendAsync(IscsiTestClient.DataOut(9, r2t.U32(20), 0, offset, false), data.AsMemory((int)offset, 4096));
            await c.SendAsync(IscsiTestClient.DataOut(9, r2t.U32(20), 1, offset + 4096, true), data.AsMemory((int)offset + 4096, 4096));
            asked += (int)length;
        }
        var response = await c.ReceiveAsync();
        Assert.Equal(Opcode.ScsiResponse, response.Opcode);
        Assert.Equal(0, response.Bhs[3]);
        Assert.True(data.AsSpan().SequenceEqual(h.Disk.Data.Slice(100 * 512, data.Length)));
    }

    [Fact]
    public async Task Immediate_and_unsolicited_data_complete_a_write_without_r2t()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk, "|InitialR2T=No|ImmediateData=Yes|FirstBurstLength=65536");
        var data = new byte[8192];
        new Random(4).NextBytes(data);
        var command = IscsiTestClient.ScsiCommand(11, c.CmdSn++, 8192, false, true, Write10(8, 16), final: false);
        await c.SendAsync(command, data.AsMemory(0, 2048));
        await c.SendAsync(IscsiTestClient.DataOut(11, Bhs.ReservedTag, 0, 2048, true), data.AsMemory(2048));
        var response = await c.ReceiveAsync();
        Assert.Equal(Opcode.ScsiResponse, response.Opcode);
        Assert.Equal(0, response.Bhs[3]);
        Assert.True(data.AsSpan().SequenceEqual(h.Disk.Data.Slice(8 * 512, 8192)));
    }

    [Theory]
    [InlineData(1u, 0u)] // DataSN must start at 0 for every R2T
    [InlineData(0u, 512u)] // offsets must come in order (DataPDUInOrder=Yes)
    public async Task A_data_out_out_of_sequence_drops_the_connection_without_writing(uint dataSn, uint offset)
    {
        await using var h = await ServerHarness.StartAsync();
        h.Disk.Data[..1024].Fill(0x11);
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk, "|InitialR2T=Yes|ImmediateData=No");
        await c.SendAsync(IscsiTestClient.ScsiCommand(60, c.CmdSn++, 1024, false, true, Write10(0, 2)));
        var r2t = await c.ReceiveAsync();
        await c.SendAsync(IscsiTestClient.DataOut(60, r2t.U32(20), dataSn, offset, false), new byte[512].AsMemory());
        Assert.True(await c.ClosedByTargetAsync());
        Assert.True(h.Disk.Data[..1024].IndexOfAnyExcept((byte)0x11) < 0);
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Check_condition_carries_sense_data_and_scsi_errors_keep_the_session()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk);
        uint beyond = (uint)(ServerHarness.DiskBytes / 512);
        await c.SendAsync(IscsiTestClient.ScsiCommand(3, c.CmdSn++, 512, true, false, Read10(beyond, 1)));
        var response = await c.ReceiveAsync();
        Assert.Equal(Opcode.ScsiResponse, response.Opcode);
        Assert.Equal(0x02, response.Bhs[3]); // CHECK CONDITION
        Assert.Equal(18, BinaryPrimitives.ReadUInt16BigEndian(response.Data));
        Assert.Equal((0x70, 0x05, 0x21), (response.Data[2], response.Data[4], response.Data[14]));

        await c.SendAsync(IscsiTestClient.ScsiCommand(4, c.CmdSn++, 0, false, false, [0xC7, 0, 0, 0, 0, 0]));
        response = await c.ReceiveAsync();
        Assert.Equal(0x20, response.Data[14]); // INVALID COMMAND OPERATION CODE
    }

    [Fact]
    public async Task Unknown_opcodes_are_rejected_with_their_header_and_nop_pings_echo_data()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk);
        var bogus = new byte[Bhs.Length];
        bogus[0] = 0x1C;
        Bhs.Put(bogus, 16, 0xBEEFu);
        await c.SendAsync(bogus);
        var reject = await c.ReceiveAsync();
        Assert.Equal(Opcode.Reject, reject.Opcode);
        Assert.Equal((byte)RejectReason.CommandNotSupported, reject.Bhs[2]);
        Assert.Equal(bogus, reject.Data);

        await c.SendAsync(IscsiTestClient.NopOut(21, c.CmdSn), "ping"u8.ToArray());
        var nopIn = await c.ReceiveAsync();
        Assert.Equal(Opcode.NopIn, nopIn.Opcode);
        Assert.Equal(21u, nopIn.Itt);
        Assert.Equal("ping", nopIn.Text);
    }

    [Fact]
    public async Task Commands_outside_the_cmdsn_window_are_ignored()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        var login = await c.LoginNormalAsync(Disk);
        uint maxCmdSn = login.U32(32);
        await c.SendAsync(IscsiTestClient.ScsiCommand(30, maxCmdSn + 1, 0, false, false, [0x00, 0, 0, 0, 0, 0]));
        await c.SendAsync(IscsiTestClient.ScsiCommand(31, c.CmdSn - 1, 0, false, false, [0x00, 0, 0, 0, 0, 0]));
        await c.SendAsync(IscsiTestClient.ScsiCommand(32, c.CmdSn++, 0, false, false, [0x00, 0, 0, 0, 0, 0]));
        var response = await c.ReceiveAsync();
        Assert.Equal(32u, response.Itt); // 30 and 31 got no answer at all
        Assert.Equal(c.CmdSn, response.U32(28)); // ExpCmdSN advanced past 32 only
    }

    [Fact]
    public async Task Abort_task_drops_a_write_waiting_for_data()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk, "|InitialR2T=Yes|ImmediateData=No");
        await c.SendAsync(IscsiTestClient.ScsiCommand(40, c.CmdSn++, 512, false, true, Write10(0, 1)));
        var r2t = await c.ReceiveAsync();
        Assert.Equal(Opcode.ReadyToTransfer, r2t.Opcode);

        await c.SendAsync(AbortTask(41, referencedItt: 40, c.CmdSn, refCmdSn: c.CmdSn - 1));
        var tmf = await c.ReceiveAsync();
        Assert.Equal(Opcode.TaskManagementResponse, tmf.Opcode);
        Assert.Equal(41u, tmf.Itt);
        Assert.Equal((byte)TaskManagementResponseCode.FunctionComplete, tmf.Bhs[2]);

        await c.SendAsync(IscsiTestClient.DataOut(40, r2t.U32(20), 0, 0, true), new byte[512].AsMemory()); // late data: ignored
        await c.SendAsync(IscsiTestClient.NopOut(42, c.CmdSn));
        Assert.Equal(42u, (await c.ReceiveAsync()).Itt);
    }

    [Fact]
    public async Task Abort_task_for_a_command_that_already_answered_reports_task_does_not_exist()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk);
        await c.SendAsync(IscsiTestClient.ScsiCommand(70, c.CmdSn++, 0, false, false, [0x00, 0, 0, 0, 0, 0]));
        Assert.Equal(Opcode.ScsiResponse, (await c.ReceiveAsync()).Opcode);
        await c.SendAsync(AbortTask(71, referencedItt: 70, c.CmdSn, refCmdSn: c.CmdSn - 1));
        var tmf = await c.ReceiveAsync();
        Assert.Equal((byte)TaskManagementResponseCode.TaskDoesNotExist, tmf.Bhs[2]);
        // A command not received yet (RefCmdSN not below ExpCmdSN) counts as aborted.
        await c.SendAsync(AbortTask(72, referencedItt: 99, c.CmdSn, refCmdSn: c.CmdSn));
        Assert.Equal((byte)TaskManagementResponseCode.FunctionComplete, (await c.ReceiveAsync()).Bhs[2]);
    }

    private static byte[] AbortTask(uint itt, uint referencedItt, uint cmdSn, uint refCmdSn)
    {
        var abort = new byte[Bhs.Length];
        abort[0] = Bhs.ImmediateBit | (byte)Opcode.TaskManagementRequest;
        abort[1] = 0x80 | (byte)TaskManagementFunction.AbortTask;
        Bhs.Put(abort, 16, itt);
        Bhs.Put(abort, 20, referencedItt);
        Bhs.Put(abort, 24, cmdSn);
        Bhs.Put(abort, 32, refCmdSn);
        return abort;
    }

    [Fact]
    public async Task A_corrupt_header_digest_drops_the_connection_and_releases_the_export()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk, "|HeaderDigest=CRC32C");
        Assert.True(c.HeaderDigest);
        await c.SendAsync(IscsiTestClient.NopOut(1, c.CmdSn), corruptHeaderDigest: true);
        Assert.True(await c.ClosedByTargetAsync());
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Logout_ends_the_nexus_before_it_answers_so_another_session_can_reserve_at_once()
    {
        byte[] reserve6 = [0x16, 0, 0, 0, 0, 0];
        await using var h = await ServerHarness.StartAsync();
        await using var a = await IscsiTestClient.ConnectAsync(h.Port);
        await a.LoginNormalAsync(Disk);
        await using var b = await IscsiTestClient.ConnectAsync(h.Port);
        await b.LoginNormalAsync(Disk, isid: 0x0023_3D00_0002); // same initiator, another session: another I_T nexus
        Assert.Equal(0, await StatusAsync(a, reserve6)); // GOOD
        Assert.Equal(0x18, await StatusAsync(b, reserve6)); // RESERVATION CONFLICT
        await a.SendAsync(CloseSession(60u, a.CmdSn));
        Assert.Equal(Opcode.LogoutResponse, (await a.ReceiveAsync()).Opcode);
        Assert.Equal(0, await StatusAsync(b, reserve6)); // right after the answer, before any cleanup could have run
    }

    /// <summary>An immediate Logout Request that closes the session.</summary>
    private static byte[] CloseSession(uint itt, uint cmdSn)
    {
        var logout = new byte[Bhs.Length];
        logout[0] = Bhs.ImmediateBit | (byte)Opcode.LogoutRequest;
        logout[1] = 0x80;
        Bhs.Put(logout, 16, itt);
        Bhs.Put(logout, 24, cmdSn);
        return logout;
    }

    private static async Task<int> StatusAsync(IscsiTestClient c, byte[] cdb)
    {
        uint itt = c.NextItt++;
        await c.SendAsync(IscsiTestClient.ScsiCommand(itt, c.CmdSn++, 0, false, false, cdb));
        var response = await c.ReceiveAsync();
        Assert.Equal(Opcode.ScsiResponse, response.Opcode);
        Assert.Equal(itt, response.Itt);
        return response.Bhs[3];
    }

    [Fact]
    public async Task Logout_answers_then_closes_and_releases_the_export()
    {
        await using var h = await ServerHarness.StartAsync();
        await using var c = await IscsiTestClient.ConnectAsync(h.Port);
        await c.LoginNormalAsync(Disk);
        await c.SendAsync(CloseSession(50u, c.CmdSn));
        var response = await c.ReceiveAsync();
        Assert.Equal(Opcode.LogoutResponse, response.Opcode);
        Assert.Equal(50u, response.Itt);
        Assert.Equal(0, response.Bhs[2]);
        Assert.True(await c.ClosedByTargetAsync());
        await h.Catalog.WaitForNoSessionsAsync();
    }
}

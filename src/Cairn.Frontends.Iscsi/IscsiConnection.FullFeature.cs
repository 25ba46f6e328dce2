using System.Net;
using Cairn.Core;
using Cairn.Frontends.Iscsi.Login;
using Cairn.Frontends.Iscsi.Pdus;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Iscsi;

/// <summary>Whether a target PDU carries StatSN, and whether sending it consumes one.</summary>
internal enum StatSn
{
    /// <summary>The field is reserved (Data-In without status): left 0.</summary>
    None,
    /// <summary>Carries the next StatSN without consuming it (R2T, NOP-In pings).</summary>
    Current,
    /// <summary>Carries status: consumes a StatSN.</summary>
    Advance,
}

/// <summary>The full-feature phase: dispatch, the CmdSN window, and every PDU family but SCSI (see Scsi.cs).</summary>
internal sealed partial class IscsiConnection
{
    /// <summary>Commands the initiator may have outstanding: MaxCmdSN = ExpCmdSN + window - 1.</summary>
    private const uint CmdSnWindow = 64;

    private uint _statSn;
    private uint _expCmdSn;

    private async ValueTask FullFeaturePhaseAsync()
    {
        while (await ReceivePduAsync())
        {
            if (!await DispatchAsync())
            {
                return;
            }
        }
    }

    /// <summary>Handles one PDU; false when the connection should close (after logout).</summary>
    private async ValueTask<bool> DispatchAsync()
    {
        var opcode = Bhs.GetOpcode(Header);
        bool discovery = Parameters.SessionType == SessionType.Discovery;
        switch (opcode)
        {
            case Opcode.NopOut:
                await NopOutAsync();
                return true;
            case Opcode.TextRequest:
                await TextAsync();
                return true;
            case Opcode.LogoutRequest:
                return await LogoutAsync();
            case Opcode.ScsiCommand when !discovery:
                await ScsiCommandAsync();
                return true;
            case Opcode.DataOut when !discovery:
                return await DataOutAsync();
            case Opcode.TaskManagementRequest when !discovery:
                return await TaskManagementAsync();
            case Opcode.SnackRequest:
                await RejectAsync(RejectReason.SnackReject); // ErrorRecoveryLevel 0: nothing to retransmit from
                return true;
            case Opcode.ScsiCommand or Opcode.DataOut or Opcode.TaskManagementRequest or Opcode.LoginRequest:
                await RejectAsync(RejectReason.ProtocolError); // discovery sessions carry only Text and Logout
                return true;
            default:
                await RejectAsync(RejectReason.CommandNotSupported);
                return true;
        }
    }

    /// <summary>
    /// Applies the CmdSN rules (RFC 7143 §4.2.2.1) to a request: immediate ones do not advance ExpCmdSN; others outside
    /// [ExpCmdSN, MaxCmdSN] are silently ignored (false).
    /// </summary>
    private bool AcceptCmdSn()
    {
        if (Bhs.IsImmediate(Header))
        {
            return true;
        }
        uint cmdSn = Bhs.U32(Header, 24);
        if (Bhs.SerialLess(cmdSn, _expCmdSn) || !Bhs.SerialLess(cmdSn, _expCmdSn + CmdSnWindow))
        {
            _logger.LogDebug("iSCSI {Client}: CmdSN {CmdSn} outside the window from {ExpCmdSn}; ignored", ClientDescription, cmdSn, _expCmdSn);
            return false;
        }
        // One connection per session and TCP in order: a CmdSN ahead of ExpCmdSN means the initiator skipped some.
        _expCmdSn = cmdSn + 1;
        return true;
    }

    private void StampSequenceNumbers(Span<byte> bhs, StatSn statSn)
    {
        if (statSn != StatSn.None)
        {
            Bhs.Put(bhs, Bhs.StatSnOffset, _statSn);
            if (statSn == StatSn.Advance)
            {
                _statSn++;
            }
        }
        Bhs.Put(bhs, Bhs.ExpCmdSnOffset, _expCmdSn);
        Bhs.Put(bhs, Bhs.MaxCmdSnOffset, _expCmdSn + CmdSnWindow - 1);
    }

    private ValueTask RejectAsync(RejectReason reason)
    {
        _logger.LogDebug("iSCSI {Client}: rejecting {Opcode} PDU: {Reason}", ClientDescription, Bhs.GetOpcode(Header), reason);
        Span<byte> rejected = stackalloc byte[Bhs.Length];
        Header[..Bhs.Length].CopyTo(rejected);
        new RejectPdu(reason).WriteTo(_send);
        return SendAsync(rejected, StatSn.Advance);
    }

    private ValueTask NopOutAsync()
    {
        var nop = NopOut.Parse(Header);
        if (!AcceptCmdSn() || nop.InitiatorTaskTag == Bhs.ReservedTag)
        {
            return ValueTask.CompletedTask; // an answer to our ping, or a ping that wants no answer
        }
        new NopIn(nop.Lun, nop.InitiatorTaskTag, Bhs.ReservedTag).WriteTo(_send);
        var echo = Data.Span;
        return SendAsync(echo[..Math.Min(echo.Length, SendSegmentBytes)], StatSn.Advance);
    }

    private async ValueTask TextAsync()
    {
        var request = TextRequest.Parse(Header);
        if (!AcceptCmdSn())
        {
            return;
        }
        var keys = TextKeys.Parse(Data.Span);
        if (keys is null || request.Continue)
        {
            await RejectAsync(RejectReason.ProtocolError);
            return;
        }
        var answers = new List<KeyValuePair<string, string>>();
        foreach (var (key, value) in keys)
        {
            if (key == "SendTargets")
            {
                AddTargets(value, answers);
            }
            else
            {
                answers.Add(new(key, "NotUnderstood"));
            }
        }
        var text = TextKeys.Serialize(answers);
        // TODO(next session): long SendTargets answers need Text continuation (C bit, TTT); until then cut at a pair boundary.
        int length = text.Length <= SendSegmentBytes ? text.Length : text.AsSpan(0, SendSegmentBytes).LastIndexOf((byte)0) + 1;
        new TextResponse(Final: true, request.InitiatorTaskTag, Bhs.ReservedTag).WriteTo(_send);
        await SendAsync(text.AsSpan(0, length), StatSn.Advance);
    }

    /// <summary>SendTargets=All lists every export (discovery); empty or a target name lists that target (RFC 7143 §13.3).</summary>
    private void AddTargets(string value, List<KeyValuePair<string, string>> answers)
    {
        var local = (IPEndPoint)_socket.LocalEndPoint!;
        string address = _server.Options.AdvertisedHost is { } host ? FormatPortal(host, local.Port) : FormatPortal(local);
        string prefix = _server.Options.TargetPrefix;
        foreach (var export in _server.Catalog.ListExports())
        {
            if (export.Name.Contains('@', StringComparison.Ordinal))
            {
                continue; // snapshot exports (VOLUME@SNAPSHOT) are NBD only: '@' is not allowed in an iSCSI name
            }
            if (!(export.IscsiAccess ?? IscsiAccess.Open).Allows(Parameters.InitiatorName ?? ""))
            {
                continue; // never reveal a target this initiator may not log in to
            }
            string target = prefix + export.Name;
            bool wanted = value == "All" && Parameters.SessionType == SessionType.Discovery
                || value.Length == 0 && target == Parameters.TargetName
                || value == target;
            if (wanted)
            {
                answers.Add(new("TargetName", target));
                answers.Add(new("TargetAddress", address));
            }
        }
    }

    private static string FormatPortal(string host, int port) =>
        $"{(host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('[') ? $"[{host}]" : host)}:{port},{TargetLimits.TargetPortalGroupTag}";

    private static string FormatPortal(IPEndPoint endpoint)
    {
        var address = endpoint.Address.IsIPv4MappedToIPv6 ? endpoint.Address.MapToIPv4() : endpoint.Address;
        string host = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
        return $"{host}:{endpoint.Port},{TargetLimits.TargetPortalGroupTag}";
    }

    private async ValueTask<bool> LogoutAsync()
    {
        var request = LogoutRequest.Parse(Header);
        AcceptCmdSn(); // logout is answered even when sent immediate
        var code = request.Reason == LogoutReason.RemoveConnectionForRecovery ? LogoutResponseCode.RecoveryNotSupported : LogoutResponseCode.Success;
        ReleasePendingWrites();
        if (code == LogoutResponseCode.Success)
        {
            // The I_T nexus ends here, before the answer: an initiator that reserves right after seeing it must not find
            // this session's SCSI-2 reservation still held until the connection's cleanup has run (libiscsi's
            // SCSI.Reserve6.Logout test lost that race on a loaded machine).
            _unit?.EndNexus();
        }
        new LogoutResponse(code, request.InitiatorTaskTag, (ushort)Parameters.DefaultTime2Wait, 0).WriteTo(_send);
        await SendAsync([], StatSn.Advance);
        _logger.LogInformation("iSCSI {Client} logged out", ClientDescription);
        return code != LogoutResponseCode.Success;
    }

    /// <summary>
    /// Commands run to completion before the next PDU is read, so the only tasks an abort can find are writes waiting
    /// for data. ABORT TASK for a task that already answered gets "Task does not exist"; for one whose CmdSN we have
    /// not seen yet (RefCmdSN still in the window) "Function complete", as RFC 7143 §11.6.1 says.
    /// </summary>
    private async ValueTask<bool> TaskManagementAsync()
    {
        var request = TaskManagementRequest.Parse(Header);
        if (!AcceptCmdSn())
        {
            return true;
        }
        var response = TaskManagementResponseCode.FunctionComplete;
        switch (request.Function)
        {
            case TaskManagementFunction.AbortTask:
                bool notYetReceived = !Bhs.SerialLess(request.RefCmdSn, _expCmdSn) && Bhs.SerialLess(request.RefCmdSn, _expCmdSn + CmdSnWindow);
                response = ReleasePendingWrite(request.ReferencedTaskTag) || notYetReceived ? response : TaskManagementResponseCode.TaskDoesNotExist;
                break;
            case TaskManagementFunction.AbortTaskSet or TaskManagementFunction.ClearTaskSet or TaskManagementFunction.LogicalUnitReset:
                response = request.Lun == 0 ? response : TaskManagementResponseCode.LunDoesNotExist;
                ReleasePendingWrites();
                if (request.Function == TaskManagementFunction.LogicalUnitReset && request.Lun == 0)
                {
                    _unit?.Reset();
                }
                break;
            case TaskManagementFunction.TargetWarmReset or TaskManagementFunction.TargetColdReset:
                ReleasePendingWrites();
                _unit?.Reset();
                break;
            case TaskManagementFunction.TaskReassign:
                response = TaskManagementResponseCode.ReassignmentNotSupported;
                break;
            default:
                response = TaskManagementResponseCode.FunctionNotSupported;
                break;
        }
        new TaskManagementResponse(response, request.InitiatorTaskTag).WriteTo(_send);
        await SendAsync([], StatSn.Advance);
        // A cold reset drops every connection of the target, this one included (RFC 7143 §11.5.1).
        return request.Function != TaskManagementFunction.TargetColdReset;
    }
}

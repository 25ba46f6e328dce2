using Cairn.Frontends.Iscsi.Login;
using Cairn.Frontends.Iscsi.Pdus;
using Cairn.Frontends.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Iscsi;

/// <summary>The login phase (RFC 7143 §6.3): security stage (AuthMethod None), operational negotiation, then full feature.</summary>
internal sealed partial class IscsiConnection
{
    private LoginStage _stage = LoginStage.Security;
    private bool _firstLoginRequest = true;
    private ulong _isid;
    private ushort _tsih;

    /// <summary>Runs login requests until the full-feature phase starts (true) or login fails or the initiator leaves (false).</summary>
    private async ValueTask<bool> LoginPhaseAsync()
    {
        while (await ReceivePduAsync())
        {
            if (Bhs.GetOpcode(Header) != Opcode.LoginRequest)
            {
                _logger.LogWarning("iSCSI {Client} sent {Opcode} before logging in; closing", ClientDescription, Bhs.GetOpcode(Header));
                return false;
            }
            var request = LoginRequest.Parse(Header);
            if (_firstLoginRequest)
            {
                _firstLoginRequest = false;
                _isid = request.Isid;
                _statSn = request.ExpStatSn;
                _expCmdSn = request.CmdSn; // login requests are immediate: CmdSN does not advance
                if (request.CurrentStage == LoginStage.Operational)
                {
                    _stage = LoginStage.Operational; // no security stage wanted: allowed while we require no authentication
                }
            }
            var (status, answers) = Login(request);
            if (status != LoginStatus.Success)
            {
                _logger.LogInformation("iSCSI {Client} login refused: {Status}", ClientDescription, status);
                await SendLoginResponseAsync(request, status, transit: false, []);
                return false;
            }
            bool entering = request.Transit && request.NextStage == LoginStage.FullFeature;
            if (entering)
            {
                _tsih = _server.AllocateTsih();
            }
            await SendLoginResponseAsync(request, status, request.Transit, TextKeys.Serialize(answers));
            if (request.Transit)
            {
                _stage = request.NextStage;
            }
            if (entering)
            {
                // Digests apply from the first PDU after the last login response (RFC 7143 §13.1).
                _headerDigest = Parameters.HeaderDigest;
                _dataDigest = Parameters.DataDigest;
                _logger.LogInformation("iSCSI {Client} logged in: {Type} session, target {Target}", ClientDescription, Parameters.SessionType, Parameters.TargetName);
                return true;
            }
        }
        return false;
    }

    private (LoginStatus Status, List<KeyValuePair<string, string>> Answers) Login(in LoginRequest request)
    {
        if (request.VersionMin > 0)
        {
            return (LoginStatus.UnsupportedVersion, []);
        }
        if (request.Tsih != 0)
        {
            return (LoginStatus.SessionDoesNotExist, []); // one connection per session: nothing to add a connection to
        }
        if (request.Continue)
        {
            return (LoginStatus.InitiatorError, []); // text split across login PDUs is not supported yet
        }
        bool badTransit = request.Transit && (request.NextStage <= request.CurrentStage || request.NextStage == (LoginStage)2);
        if (request.CurrentStage != _stage || badTransit)
        {
            return (LoginStatus.InitiatorError, []);
        }
        var keys = TextKeys.Parse(Data.Span);
        if (keys is null)
        {
            return (LoginStatus.InitiatorError, []);
        }
        bool first = _session is null && Parameters.InitiatorName is null;
        var answers = _negotiator.Negotiate(keys);
        if (first && FirstRequestChecks(answers) is { } refused)
        {
            return (refused, []);
        }
        bool offeredAuth = keys.Exists(k => k.Key == "AuthMethod");
        if (offeredAuth && _negotiator.AuthMethod is null)
        {
            return (LoginStatus.AuthenticationFailure, []); // only AuthMethod=None exists so far
        }
        if (request.CurrentStage == LoginStage.Operational || (request.Transit && request.NextStage == LoginStage.FullFeature))
        {
            _negotiator.AddDeclarations(answers);
        }
        return (LoginStatus.Success, answers);
    }

    /// <summary>The first request names the initiator and, for a normal session, the target: open its export now.</summary>
    private LoginStatus? FirstRequestChecks(List<KeyValuePair<string, string>> answers)
    {
        if (string.IsNullOrEmpty(Parameters.InitiatorName))
        {
            return LoginStatus.MissingParameter;
        }
        ClientDescription = $"iscsi {Parameters.InitiatorName} {_socket.RemoteEndPoint}";
        if (Parameters.SessionType == SessionType.Discovery)
        {
            return null;
        }
        string? target = Parameters.TargetName;
        if (string.IsNullOrEmpty(target))
        {
            return LoginStatus.MissingParameter;
        }
        string prefix = _server.Options.TargetPrefix;
        if (!target.StartsWith(prefix, StringComparison.Ordinal))
        {
            return LoginStatus.NotFound;
        }
        string exportName = target[prefix.Length..];
        _session = _server.Catalog.TryOpen(exportName, ClientDescription);
        if (_session is null)
        {
            return LoginStatus.NotFound;
        }
        string initiatorPort = $"{Parameters.InitiatorName},i,0x{_isid:x12}";
        _unit = new ScsiLogicalUnit(_session.Device, exportName, target, _server.ReservationsOf(_session.Device), initiatorPort);
        answers.Add(new("TargetPortalGroupTag", TargetLimits.TargetPortalGroupTag.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        return null;
    }

    private ValueTask SendLoginResponseAsync(in LoginRequest request, LoginStatus status, bool transit, ReadOnlySpan<byte> keys)
    {
        new LoginResponse(transit, request.CurrentStage, request.NextStage, _isid, _tsih, request.InitiatorTaskTag, status).WriteTo(_send);
        return SendAsync(keys, StatSn.Advance);
    }
}

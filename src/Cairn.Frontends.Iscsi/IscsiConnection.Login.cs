using Cairn.Core;
using Cairn.Frontends.Iscsi.Login;
using Cairn.Frontends.Iscsi.Pdus;
using Cairn.Frontends.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Iscsi;

/// <summary>
/// The login phase (RFC 7143 §6.3): security stage (AuthMethod None, or CHAP when the volume has a secret), operational
/// negotiation, then full feature. The volume's allow list is checked as soon as the first request names the target.
/// </summary>
internal sealed partial class IscsiConnection
{
    private readonly LoginSecurity _security = new();
    private LoginStage _stage = LoginStage.Security;
    private bool _firstLoginRequest = true;
    private ulong _isid;
    private ushort _tsih;
    private string? _exportName;

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
                    _stage = LoginStage.Operational; // no security stage: refused below when the volume requires CHAP
                }
            }
            var (status, answers, transit) = Login(request);
            if (status != LoginStatus.Success)
            {
                _logger.LogWarning("iSCSI {Client} login to {Target} refused: {Status}{Reason}", ClientDescription, Parameters.TargetName ?? "(discovery)", status,
                    _security.Failure is { } why ? " (" + why + ")" : "");
                await SendLoginResponseAsync(request, status, transit: false, []);
                return false;
            }
            bool entering = transit && request.NextStage == LoginStage.FullFeature;
            if (entering)
            {
                _tsih = _server.AllocateTsih();
            }
            await SendLoginResponseAsync(request, status, transit, TextKeys.Serialize(answers));
            if (transit)
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

    /// <summary>Answers one login request: the status, the keys, and whether the response lets the initiator move on (T bit).</summary>
    private (LoginStatus Status, List<KeyValuePair<string, string>> Answers, bool Transit) Login(in LoginRequest request)
    {
        if (request.VersionMin > 0)
        {
            return (LoginStatus.UnsupportedVersion, [], false);
        }
        if (request.Tsih != 0)
        {
            return (LoginStatus.SessionDoesNotExist, [], false); // one connection per session: nothing to add a connection to
        }
        if (request.Continue)
        {
            return (LoginStatus.InitiatorError, [], false); // text split across login PDUs is not supported yet
        }
        bool badTransit = request.Transit && (request.NextStage <= request.CurrentStage || request.NextStage == (LoginStage)2);
        if (request.CurrentStage != _stage || badTransit)
        {
            return (LoginStatus.InitiatorError, [], false);
        }
        var keys = TextKeys.Parse(Data.Span);
        if (keys is null)
        {
            return (LoginStatus.InitiatorError, [], false);
        }
        bool first = Parameters.InitiatorName is null;
        var answers = _negotiator.Negotiate(keys);
        if (first && FirstRequestChecks(answers) is { } refused)
        {
            return (refused, [], false);
        }
        bool secure = request.CurrentStage == LoginStage.Security ? _security.Take(keys, answers) : _security.Authenticated;
        if (!secure || (request.Transit && !_security.Authenticated && !_security.InProgress))
        {
            return (LoginStatus.AuthenticationFailure, [], false); // skipped, refused or unfinished authentication
        }
        // While a CHAP exchange is under way the target holds the initiator in the security stage (T=0).
        bool transit = request.Transit && _security.Authenticated;
        if (transit && request.NextStage == LoginStage.FullFeature && !OpenExport())
        {
            return (LoginStatus.NotFound, [], false);
        }
        if (request.CurrentStage == LoginStage.Operational || (transit && request.NextStage == LoginStage.FullFeature))
        {
            _negotiator.AddDeclarations(answers);
        }
        return (LoginStatus.Success, answers, transit);
    }

    /// <summary>
    /// The first request names the initiator and, for a normal session, the target: check that it exists and that this
    /// initiator may use it, and learn whether it needs CHAP. The export is opened only once login succeeds.
    /// </summary>
    private LoginStatus? FirstRequestChecks(List<KeyValuePair<string, string>> answers)
    {
        if (string.IsNullOrEmpty(Parameters.InitiatorName))
        {
            return LoginStatus.MissingParameter;
        }
        ClientDescription = $"iscsi {Parameters.InitiatorName} {_socket.RemoteEndPoint}";
        if (Parameters.SessionType == SessionType.Discovery)
        {
            return null; // discovery needs no secret; it lists only the targets this initiator may log in to
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
        _exportName = target[prefix.Length..];
        if (_server.Catalog.Find(_exportName) is not { } export)
        {
            return LoginStatus.NotFound;
        }
        var access = export.IscsiAccess ?? IscsiAccess.Open;
        if (!access.Allows(Parameters.InitiatorName))
        {
            return LoginStatus.AuthorizationFailure;
        }
        _security.Require(access.Chap, access.MutualChap);
        answers.Add(new("TargetPortalGroupTag", TargetLimits.TargetPortalGroupTag.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        return null;
    }

    /// <summary>Opens the export of a normal session as login completes; false when it went away meanwhile.</summary>
    private bool OpenExport()
    {
        if (Parameters.SessionType == SessionType.Discovery)
        {
            return true;
        }
        _session = _server.Catalog.TryOpen(_exportName!, ClientDescription);
        if (_session is null)
        {
            return false;
        }
        string initiatorPort = $"{Parameters.InitiatorName},i,0x{_isid:x12}";
        // The names checked at the first request, whatever TargetName later requests repeat.
        _unit = new ScsiLogicalUnit(_session.Device, _exportName!, _server.Options.TargetPrefix + _exportName, _server.ReservationsOf(_session.Device), initiatorPort);
        return true;
    }

    private ValueTask SendLoginResponseAsync(in LoginRequest request, LoginStatus status, bool transit, ReadOnlySpan<byte> keys)
    {
        new LoginResponse(transit, request.CurrentStage, request.NextStage, _isid, _tsih, request.InitiatorTaskTag, status).WriteTo(_send);
        return SendAsync(keys, StatSn.Advance);
    }
}

using System.Globalization;

namespace Cairn.Frontends.Iscsi.Login;

/// <summary>
/// Answers the keys of login requests (RFC 7143 §6.2 and §13), one request at a time, and records the outcome in
/// <see cref="Parameters"/>. Knows nothing of sockets, stages or targets: the connection checks those.
/// </summary>
internal sealed class LoginNegotiator
{
    private const int MinDataLength = 512;
    private const int MaxDataLength = 0xFF_FFFF;
    private bool _declaredMaxRecv;
    private bool _sentFirstBurst;

    public SessionParameters Parameters { get; } = new();

    /// <summary>Answers one request's keys. Keys the initiator only declares get no answer; unknown keys get NotUnderstood.</summary>
    public List<KeyValuePair<string, string>> Negotiate(IReadOnlyList<KeyValuePair<string, string>> keys)
    {
        var answers = new List<KeyValuePair<string, string>>();
        foreach (var (key, value) in keys)
        {
            if (value is "NotUnderstood" or "Irrelevant" or "Reject" || LoginSecurity.IsSecurityKey(key))
            {
                continue; // the initiator answering a key we declared, or a security key (LoginSecurity answers those)
            }
            if (Answer(key, value) is { } answer)
            {
                answers.Add(new(key, answer));
            }
        }
        // FirstBurstLength must not exceed MaxBurstLength, whichever order the keys came in.
        if (Parameters.FirstBurstLength > Parameters.MaxBurstLength)
        {
            Parameters.FirstBurstLength = Parameters.MaxBurstLength;
            if (_sentFirstBurst)
            {
                answers.RemoveAll(a => a.Key == "FirstBurstLength");
                answers.Add(new("FirstBurstLength", Number(Parameters.FirstBurstLength)));
            }
        }
        return answers;
    }

    /// <summary>Our own declarations, sent once, when the connection leaves the security stage (the initiator needs our MaxRecvDataSegmentLength).</summary>
    public void AddDeclarations(List<KeyValuePair<string, string>> answers)
    {
        if (!_declaredMaxRecv)
        {
            _declaredMaxRecv = true;
            answers.Add(new("MaxRecvDataSegmentLength", Number(TargetLimits.MaxRecvDataSegmentLength)));
        }
    }

    private string? Answer(string key, string value)
    {
        var p = Parameters;
        switch (key)
        {
            case "InitiatorName":
                p.InitiatorName = value;
                return null;
            case "InitiatorAlias":
                p.InitiatorAlias = value;
                return null;
            case "TargetName":
                p.TargetName = value;
                return null;
            case "SessionType":
                if (value is not ("Normal" or "Discovery"))
                {
                    return "Reject";
                }
                p.SessionType = value == "Discovery" ? SessionType.Discovery : SessionType.Normal;
                return null;
            case "HeaderDigest":
                return Digest(value, on => p.HeaderDigest = on);
            case "DataDigest":
                return Digest(value, on => p.DataDigest = on);
            case "InitialR2T":
                return Boolean(value, initiator => p.InitialR2T = initiator, or: true, ours: false);
            case "ImmediateData":
                return Boolean(value, initiator => p.ImmediateData = initiator, or: false, ours: true);
            case "DataPDUInOrder":
                return Boolean(value, initiator => p.DataPduInOrder = initiator, or: true, ours: true);
            case "DataSequenceInOrder":
                return Boolean(value, initiator => p.DataSequenceInOrder = initiator, or: true, ours: true);
            case "IFMarker" or "OFMarker":
                return Boolean(value, _ => { }, or: false, ours: false);
            case "MaxRecvDataSegmentLength":
                if (!TryNumber(value, MinDataLength, MaxDataLength, out int mrdsl))
                {
                    return "Reject";
                }
                p.InitiatorMaxRecvDataSegmentLength = mrdsl;
                return null; // declarative: we declare ours separately
            case "MaxBurstLength":
                return Minimum(value, MinDataLength, MaxDataLength, TargetLimits.MaxBurstLength, v => p.MaxBurstLength = v);
            case "FirstBurstLength":
                _sentFirstBurst = true;
                return Minimum(value, MinDataLength, MaxDataLength, TargetLimits.FirstBurstLength, v => p.FirstBurstLength = v);
            case "MaxOutstandingR2T":
                return Minimum(value, 1, 65535, TargetLimits.MaxOutstandingR2T, v => p.MaxOutstandingR2T = v);
            case "MaxConnections":
                return Minimum(value, 1, 65535, 1, _ => { });
            case "ErrorRecoveryLevel":
                return Minimum(value, 0, 2, 0, v => p.ErrorRecoveryLevel = v);
            case "DefaultTime2Retain":
                return Minimum(value, 0, 3600, TargetLimits.DefaultTime2Retain, v => p.DefaultTime2Retain = v);
            case "DefaultTime2Wait":
                if (!TryNumber(value, 0, 3600, out int wait))
                {
                    return "Reject";
                }
                p.DefaultTime2Wait = Math.Max(wait, TargetLimits.DefaultTime2Wait);
                return Number(p.DefaultTime2Wait);
            case "OFMarkInt" or "IFMarkInt":
                return "Irrelevant"; // markers are always No here
            default:
                return "NotUnderstood";
        }
    }

    private string Digest(string offered, Action<bool> set)
    {
        var choices = List(offered);
        // Discovery sessions never use digests (nothing worth protecting, and some initiators choke on them).
        bool discovery = Parameters.SessionType == SessionType.Discovery;
        foreach (var choice in choices)
        {
            if (choice == "None" || (choice == "CRC32C" && !discovery))
            {
                set(choice == "CRC32C");
                return choice;
            }
        }
        return "Reject";
    }

    private static string Boolean(string offered, Action<bool> set, bool or, bool ours)
    {
        if (offered is not ("Yes" or "No"))
        {
            return "Reject";
        }
        bool initiator = offered == "Yes";
        bool result = or ? initiator || ours : initiator && ours;
        set(result);
        return result ? "Yes" : "No";
    }

    private static string Minimum(string offered, int min, int max, int ours, Action<int> set)
    {
        if (!TryNumber(offered, min, max, out int value))
        {
            return "Reject";
        }
        int result = Math.Min(value, ours);
        set(result);
        return Number(result);
    }

    private static bool TryNumber(string text, int min, int max, out int value) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value) && value >= min && value <= max;

    private static string Number(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static string[] List(string value) => value.Split(',', StringSplitOptions.TrimEntries);
}

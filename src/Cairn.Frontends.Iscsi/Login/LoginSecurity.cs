using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Login;

/// <summary>
/// The security stage of one login (RFC 7143 §6.3.1, §12.1.3): AuthMethod, then CHAP with MD5 (CHAP_A=5) when the
/// target has a secret, including the mutual step when the initiator sends its own challenge. Knows nothing of PDUs.
/// </summary>
internal sealed class LoginSecurity
{
    private const string ChapMd5 = "5";
    private const int ChallengeBytes = 16;
    private const int MaxChallengeBytes = 1024;

    private enum Step { Method, Algorithm, Response, Done }

    private Step _step = Step.Method;
    private ChapCredentials? _chap;
    private ChapCredentials? _mutual;
    private byte _identifier;
    private byte[] _challenge = [];

    /// <summary>True once the initiator proved itself, or authentication is not required and nothing was started.</summary>
    public bool Authenticated => _step == Step.Done || (_chap is null && _step == Step.Method);

    /// <summary>True between AuthMethod=CHAP and the initiator's response: the target keeps it in the security stage.</summary>
    public bool InProgress => _step is Step.Algorithm or Step.Response;

    /// <summary>Set when the target is known (first login request): null credentials = no authentication required.</summary>
    public void Require(ChapCredentials? chap, ChapCredentials? mutual)
    {
        _chap = chap;
        _mutual = mutual;
    }

    /// <summary>Why the last step failed, for the log (never includes secrets).</summary>
    public string? Failure { get; private set; }

    /// <summary>Whether a key belongs to the security stage (the operational negotiator leaves these alone).</summary>
    public static bool IsSecurityKey(string key) => key == "AuthMethod" || key.StartsWith("CHAP_", StringComparison.Ordinal);

    /// <summary>Takes the security keys of one request and adds the answers; false = authentication failed (status 0x0201).</summary>
    public bool Take(IReadOnlyList<KeyValuePair<string, string>> keys, List<KeyValuePair<string, string>> answers)
    {
        var k = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in keys.Where(p => IsSecurityKey(p.Key)))
        {
            if (!k.TryAdd(key, value))
            {
                return Fail($"{key} sent twice in one request");
            }
        }
        if (k.Count == 0)
        {
            return true;
        }
        // Steps in order, so an initiator that sends AuthMethod and CHAP_A together is served in one round trip.
        if (k.Remove("AuthMethod", out string? methods) && !ChooseMethod(methods.Split(','), answers))
        {
            return false;
        }
        if (_step == Step.Algorithm && k.Remove("CHAP_A", out string? algorithms))
        {
            return k.Count == 0 ? SendChallenge(algorithms.Split(','), answers) : Fail($"unexpected {string.Join(", ", k.Keys)} with CHAP_A");
        }
        if (_step == Step.Response && k.ContainsKey("CHAP_N") && k.ContainsKey("CHAP_R"))
        {
            return CheckResponse(k, answers);
        }
        return k.Count == 0 || Fail($"CHAP keys out of order ({string.Join(", ", k.Keys)})");
    }

    private bool ChooseMethod(string[] offered, List<KeyValuePair<string, string>> answers)
    {
        if (_step != Step.Method)
        {
            return Fail("AuthMethod sent twice");
        }
        if (_chap is null)
        {
            if (!offered.Contains("None"))
            {
                return Fail("the initiator insists on authentication but the volume has no CHAP secret");
            }
            answers.Add(new("AuthMethod", "None"));
            _step = Step.Done;
            return true;
        }
        if (!offered.Contains("CHAP"))
        {
            return Fail("the volume requires CHAP and the initiator does not offer it");
        }
        answers.Add(new("AuthMethod", "CHAP"));
        _step = Step.Algorithm;
        return true;
    }

    private bool SendChallenge(string[] algorithms, List<KeyValuePair<string, string>> answers)
    {
        if (!algorithms.Contains(ChapMd5))
        {
            return Fail("the initiator offers no CHAP algorithm we support (MD5, CHAP_A=5)");
        }
        _identifier = (byte)RandomNumberGenerator.GetInt32(256);
        _challenge = RandomNumberGenerator.GetBytes(ChallengeBytes);
        answers.Add(new("CHAP_A", ChapMd5));
        answers.Add(new("CHAP_I", _identifier.ToString(CultureInfo.InvariantCulture)));
        answers.Add(new("CHAP_C", "0x" + Convert.ToHexStringLower(_challenge)));
        _step = Step.Response;
        return true;
    }

    private bool CheckResponse(Dictionary<string, string> keys, List<KeyValuePair<string, string>> answers)
    {
        var chap = _chap!;
        byte[]? response = DecodeBinary(keys["CHAP_R"]);
        byte[] expected = Digest(_identifier, chap.Secret, _challenge);
        if (keys["CHAP_N"] != chap.User || response is null || !CryptographicOperations.FixedTimeEquals(response, expected))
        {
            return Fail($"CHAP user '{keys["CHAP_N"]}' gave a wrong name or response");
        }
        if (keys.TryGetValue("CHAP_I", out string? idText) && keys.TryGetValue("CHAP_C", out string? challengeText))
        {
            // Mutual CHAP: the initiator wants the target to prove itself with the other secret.
            byte[]? challenge = DecodeBinary(challengeText);
            if (_mutual is null)
            {
                return Fail("the initiator asks for mutual CHAP but the volume has no mutual secret");
            }
            if (!byte.TryParse(idText, NumberStyles.None, CultureInfo.InvariantCulture, out byte id) || challenge is null || challenge.Length is 0 or > MaxChallengeBytes)
            {
                return Fail("malformed mutual CHAP_I or CHAP_C");
            }
            if (challenge.AsSpan().SequenceEqual(_challenge))
            {
                return Fail("the initiator sent our own challenge back (reflection)");
            }
            answers.Add(new("CHAP_N", _mutual.User));
            answers.Add(new("CHAP_R", "0x" + Convert.ToHexStringLower(Digest(id, _mutual.Secret, challenge))));
        }
        _step = Step.Done;
        return true;
    }

    /// <summary>CHAP with MD5 (RFC 1994 §4.1): MD5(identifier, secret, challenge).</summary>
    internal static byte[] Digest(byte identifier, string secret, ReadOnlySpan<byte> challenge)
    {
        byte[] secretBytes = Encoding.UTF8.GetBytes(secret);
        var input = new byte[1 + secretBytes.Length + challenge.Length];
        input[0] = identifier;
        secretBytes.CopyTo(input, 1);
        challenge.CopyTo(input.AsSpan(1 + secretBytes.Length));
#pragma warning disable CA5351 // CHAP_A=5 is MD5 by definition (RFC 1994); initiators offer nothing else
        return MD5.HashData(input);
#pragma warning restore CA5351
    }

    /// <summary>Binary values are 0x-hex or 0b-base64 (RFC 7143 §6.1); null when malformed.</summary>
    internal static byte[]? DecodeBinary(string value)
    {
        try
        {
            if (value.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            {
                string hex = value[2..];
                return Convert.FromHexString(hex.Length % 2 == 0 ? hex : "0" + hex);
            }
            return value.StartsWith("0b", StringComparison.OrdinalIgnoreCase) ? Convert.FromBase64String(value[2..]) : null;
        }
        catch (FormatException)
        {
            return null;
        }
    }

    private bool Fail(string reason)
    {
        Failure = reason;
        return false;
    }
}

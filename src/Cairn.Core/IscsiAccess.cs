using System.Text;

namespace Cairn.Core;

/// <summary>
/// Who may log in to a volume's iSCSI target. An empty allow list admits every initiator name; without
/// <see cref="Chap"/> no authentication is asked. <see cref="Open"/> (the default of every volume) is both.
/// </summary>
/// <param name="AllowedInitiators">Initiator names (iqn./eui./naa.) that may log in, compared without case; empty = any.</param>
/// <param name="Chap">The credentials initiators must prove (one-way CHAP); null = no authentication.</param>
/// <param name="MutualChap">The credentials the target proves back when the initiator asks (mutual CHAP); needs <see cref="Chap"/>.</param>
public sealed record IscsiAccess(IReadOnlyList<string> AllowedInitiators, ChapCredentials? Chap = null, ChapCredentials? MutualChap = null)
{
    /// <summary>RFC 3720 §8.2.1 recommends at least 12 bytes (96 bits); open-iscsi refuses more than 16 with some kernels.</summary>
    public const int MinSecretBytes = 12;
    public const int MaxSecretBytes = 16;
    public const int MaxInitiators = 256;
    /// <summary>RFC 3720 §3.2.6.1: an iSCSI name is at most 223 bytes.</summary>
    public const int MaxNameBytes = 223;

    public static readonly IscsiAccess Open = new([]);

    public bool IsOpen => AllowedInitiators.Count == 0 && Chap is null;

    public bool Allows(string initiatorName) =>
        AllowedInitiators.Count == 0 || AllowedInitiators.Any(n => string.Equals(n, initiatorName, StringComparison.OrdinalIgnoreCase));

    /// <summary>The first problem with the policy as (field, reason), or null when it is valid.</summary>
    public (string Field, string Reason)? Validate()
    {
        if (AllowedInitiators.Count > MaxInitiators)
        {
            return ("allowedInitiators", $"allowedInitiators holds at most {MaxInitiators} initiator names, not {AllowedInitiators.Count}");
        }
        for (int i = 0; i < AllowedInitiators.Count; i++)
        {
            if (NameProblem(AllowedInitiators[i]) is { } problem)
            {
                return ($"allowedInitiators[{i}]", $"allowedInitiators[{i}]: {problem}");
            }
        }
        if (MutualChap is not null && Chap is null)
        {
            return ("mutualChap", "mutualChap needs chap too: the target only proves itself to an initiator that proved itself first");
        }
        return CredentialProblem("chap", Chap) ?? CredentialProblem("mutualChap", MutualChap)
            ?? (MutualChap is not null && MutualChap.Secret == Chap!.Secret
                ? ("mutualChap.secret", "mutualChap.secret must differ from chap.secret: RFC 7143 §12.1.3 forbids one secret for both directions")
                : null);
    }

    private static string? NameProblem(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return "an initiator name is empty";
        }
        if (!(name.StartsWith("iqn.", StringComparison.OrdinalIgnoreCase) || name.StartsWith("eui.", StringComparison.OrdinalIgnoreCase)
            || name.StartsWith("naa.", StringComparison.OrdinalIgnoreCase)))
        {
            return $"'{name}' is not an iSCSI name: it must start with iqn., eui. or naa.";
        }
        if (Encoding.UTF8.GetByteCount(name) > MaxNameBytes || name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c == ','))
        {
            return $"'{name}' is not an iSCSI name: at most {MaxNameBytes} bytes, no spaces, commas or control characters";
        }
        return null;
    }

    private static (string, string)? CredentialProblem(string field, ChapCredentials? credentials)
    {
        if (credentials is null)
        {
            return null;
        }
        if (string.IsNullOrEmpty(credentials.User) || credentials.User.Length > 255 || credentials.User.Any(char.IsControl))
        {
            return ($"{field}.user", $"{field}.user must be 1-255 characters without control characters");
        }
        int secretBytes = Encoding.UTF8.GetByteCount(credentials.Secret ?? "");
        if (secretBytes is < MinSecretBytes or > MaxSecretBytes || credentials.Secret!.Any(char.IsControl))
        {
            return ($"{field}.secret", $"{field}.secret must be {MinSecretBytes}-{MaxSecretBytes} bytes without control characters (RFC 3720 §8.2.1; open-iscsi takes at most 16); it is {secretBytes}");
        }
        return null;
    }
}

/// <summary>A CHAP user name and secret. <see cref="ToString"/> leaves the secret out, so logs never carry it.</summary>
public sealed record ChapCredentials(string User, string Secret)
{
    public override string ToString() => $"CHAP user {User}";
}

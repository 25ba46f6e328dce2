using System.Diagnostics.CodeAnalysis;

namespace Cairn.ControlPlane;

/// <summary>
/// Volume names become NBD export names and, later, parts of iSCSI IQNs, so they are restricted to
/// what both accept without escaping: 1-63 of [a-z0-9-_.], starting with a letter or digit.
/// </summary>
public static class VolumeNames
{
    public const int MaxLength = 63;

    public static bool TryValidate([NotNullWhen(true)] string? name, out string error) => TryValidate(name, "volume name", out error);

    /// <summary>The same rules for other names (nodes, zones, racks); <paramref name="what"/> starts the error, e.g. "node name".</summary>
    public static bool TryValidate([NotNullWhen(true)] string? name, string what, out string error)
    {
        error = "";
        if (string.IsNullOrEmpty(name))
        {
            error = $"{what} is required";
            return false;
        }
        if (name.Length > MaxLength)
        {
            error = $"{what} '{Shorten(name)}' is {name.Length} characters long; the limit is {MaxLength}";
            return false;
        }
        if (!char.IsAsciiLetterLower(name[0]) && !char.IsAsciiDigit(name[0]))
        {
            error = $"{what} '{name}' must start with a lowercase letter or a digit";
            return false;
        }
        foreach (char c in name)
        {
            if (!char.IsAsciiLetterLower(c) && !char.IsAsciiDigit(c) && c is not ('-' or '_' or '.'))
            {
                error = $"{what} '{name}' contains '{c}'; use only lowercase letters, digits, '-', '_' and '.'";
                return false;
            }
        }
        return true;
    }

    public static void Validate([NotNull] string? name)
    {
        if (!TryValidate(name, out var error))
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, error, "name");
        }
    }

    private static string Shorten(string name) => name.Length <= 20 ? name : name[..20] + "...";
}

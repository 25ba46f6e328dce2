using System.Globalization;

namespace Cairn.Core;

/// <summary>Parses and formats human sizes: "10GiB", "512MiB", "4096", "1.5TiB". Binary units only; "GB" is read as GiB.</summary>
public static class ByteSize
{
    private static readonly (string Suffix, long Multiplier)[] Units =
    [
        ("tib", 1L << 40), ("tb", 1L << 40), ("t", 1L << 40),
        ("gib", 1L << 30), ("gb", 1L << 30), ("g", 1L << 30),
        ("mib", 1L << 20), ("mb", 1L << 20), ("m", 1L << 20),
        ("kib", 1L << 10), ("kb", 1L << 10), ("k", 1L << 10),
        ("b", 1),
    ];

    /// <summary>Parses a size; returns false with a reason when the text is not a positive size.</summary>
    public static bool TryParse(string? text, out long bytes, out string error)
    {
        bytes = 0;
        error = "";
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "size is empty; give bytes or a number with a unit such as 512MiB or 10GiB";
            return false;
        }
        var s = text.Trim().ToLowerInvariant();
        long multiplier = 1;
        foreach (var (suffix, m) in Units)
        {
            if (s.EndsWith(suffix, StringComparison.Ordinal))
            {
                multiplier = m;
                s = s[..^suffix.Length].TrimEnd();
                break;
            }
        }
        if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
        {
            error = $"'{text}' is not a size; use bytes or a number with a unit such as 512MiB or 10GiB";
            return false;
        }
        decimal total = number * multiplier;
        if (total <= 0 || total > long.MaxValue / 2)
        {
            error = $"'{text}' is out of range; a size must be positive and below 4 EiB";
            return false;
        }
        if (total != decimal.Truncate(total))
        {
            error = $"'{text}' is not a whole number of bytes";
            return false;
        }
        bytes = (long)total;
        return true;
    }

    public static long Parse(string text) =>
        TryParse(text, out var bytes, out var error) ? bytes : throw new FormatException(error);

    /// <summary>Formats with the largest binary unit that keeps the value at or above 1, e.g. "10 GiB", "1.5 MiB".</summary>
    public static string Format(long bytes)
    {
        string[] names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        int unit = 0;
        while (Math.Abs(value) >= 1024 && unit < names.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.##} {names[unit]}");
    }
}

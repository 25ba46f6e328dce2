using System.Text;

namespace Cairn.Frontends.Iscsi.Login;

/// <summary>The <c>key=value\0</c> text format of Login and Text PDUs (RFC 7143 §6.1).</summary>
internal static class TextKeys
{
    /// <summary>Longest key name the RFC allows.</summary>
    public const int MaxKeyBytes = 63;

    /// <summary>Parses the pairs in order; null when the text is malformed (a pair without '=' or an over-long key).</summary>
    public static List<KeyValuePair<string, string>>? Parse(ReadOnlySpan<byte> text)
    {
        var pairs = new List<KeyValuePair<string, string>>();
        while (!text.IsEmpty)
        {
            int end = text.IndexOf((byte)0);
            var pair = end < 0 ? text : text[..end];
            text = end < 0 ? [] : text[(end + 1)..];
            if (pair.IsEmpty)
            {
                continue; // padding or a stray NUL
            }
            int eq = pair.IndexOf((byte)'=');
            if (eq <= 0 || eq > MaxKeyBytes)
            {
                return null;
            }
            pairs.Add(new(Encoding.UTF8.GetString(pair[..eq]), Encoding.UTF8.GetString(pair[(eq + 1)..])));
        }
        return pairs;
    }

    public static byte[] Serialize(IEnumerable<KeyValuePair<string, string>> pairs)
    {
        var text = new StringBuilder();
        foreach (var (key, value) in pairs)
        {
            text.Append(key).Append('=').Append(value).Append('\0');
        }
        return Encoding.UTF8.GetBytes(text.ToString());
    }
}

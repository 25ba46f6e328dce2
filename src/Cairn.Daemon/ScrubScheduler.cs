using System.Globalization;
using Cairn.ControlPlane;

namespace Cairn.Daemon;

/// <summary>The background scrub (cairnd --scrub-interval): every interval, each volume of this node is scrubbed in turn, paced.</summary>
public sealed class ScrubScheduler(VolumeService volumes, TimeSpan interval, long bytesPerSecond) : BackgroundService
{
    /// <summary>Default pace of scheduled scrubs: enough to go through 1 TiB in about six hours, little enough to leave the disk to clients.</summary>
    public const long DefaultBytesPerSecond = 50L << 20;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await volumes.RunScrubScheduleAsync(interval, bytesPerSecond, stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // shutting down
        }
    }

    /// <summary>Parses "90s", "30m", "24h", "7d" (a number and a unit); "0" or "off" turns scheduling off (null).</summary>
    public static TimeSpan? ParseInterval(string? text)
    {
        if (string.IsNullOrWhiteSpace(text) || text is "0" or "off")
        {
            return null;
        }
        char unit = text[^1];
        if (!double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value <= 0)
        {
            throw new FormatException($"--scrub-interval '{text}' is not a duration; give a number and a unit, e.g. 90s, 30m, 24h or 7d (0 = off)");
        }
        return unit switch
        {
            's' => TimeSpan.FromSeconds(value),
            'm' => TimeSpan.FromMinutes(value),
            'h' => TimeSpan.FromHours(value),
            'd' => TimeSpan.FromDays(value),
            _ => throw new FormatException($"--scrub-interval '{text}' has unit '{unit}'; use s, m, h or d (e.g. 7d)"),
        };
    }

    /// <summary>Parses --scrub-rate as a size per second ("50MiB").</summary>
    public static long ParseRate(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return DefaultBytesPerSecond;
        }
        return Core.ByteSize.TryParse(text, out long bytes, out string error) && bytes > 0
            ? bytes
            : throw new FormatException($"--scrub-rate '{text}': {error}; give bytes per second such as 50MiB");
    }
}

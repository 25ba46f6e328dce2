using System.Text.RegularExpressions;

namespace Cairn.Testing;

/// <summary>
/// Removing what a run left behind. Every name a run makes starts with cairnft-PID-HEX; a run whose test process (PID)
/// is gone cannot clean up any more, so the next run does: kill the processes in its namespaces, unmount its faulty
/// drive, detach its loop device, delete its namespaces and its work directory. Live runs are left alone.
/// </summary>
public sealed partial class NetnsCluster
{
    [GeneratedRegex(@"^cairnft-(\d+)-[0-9a-f]{6}")]
    private static partial Regex RunName();

    /// <summary>Best effort: never throws, reports what it removed.</summary>
    public static async Task SweepLeftoversAsync(Action<string>? log = null)
    {
        try
        {
            string namespaces = (await HostCommand.TryAsync("ip", "netns", "list")).StandardOutput;
            foreach (string ns in namespaces.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]))
            {
                if (IsStale(ns))
                {
                    await KillNamespaceProcessesAsync(ns);
                    await HostCommand.TryAsync("ip", "netns", "del", ns);
                    log?.Invoke($"sweep: deleted namespace {ns} of a dead run");
                }
            }
            foreach (string dir in Directory.EnumerateDirectories(Path.GetTempPath(), Prefix + "*"))
            {
                if (IsStale(Path.GetFileName(dir)))
                {
                    await FaultyDrive.RemoveLeftoversAsync(Path.Combine(dir, "drive"));
                    TryDeleteDirectory(dir);
                    log?.Invoke($"sweep: removed {dir} of a dead run");
                }
            }
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException)
        {
            log?.Invoke($"sweep: {e.Message}");
        }
    }

    private static bool IsStale(string name)
    {
        var match = RunName().Match(name);
        return match.Success && !Directory.Exists($"/proc/{match.Groups[1].Value}");
    }

    private static async Task KillNamespaceProcessesAsync(string ns)
    {
        KillPids((await HostCommand.TryAsync("ip", "netns", "pids", ns)).StandardOutput);
    }

    private static void KillPids(string pids)
    {
        foreach (string pid in pids.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            try
            {
                using var process = System.Diagnostics.Process.GetProcessById(int.Parse(pid));
                process.Kill();
                process.WaitForExit(10_000);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or System.ComponentModel.Win32Exception)
            {
                // Gone already.
            }
        }
    }

    private static async Task RemoveNamespaceAsync(string ns)
    {
        await KillNamespaceProcessesAsync(ns);
        await HostCommand.TryAsync("ip", "netns", "del", ns);
    }
}

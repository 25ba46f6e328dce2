using System.Text.RegularExpressions;

namespace Cairn.Integration.Tests.Support;

/// <summary>
/// What one guest run reported through its `CAIRN-GUEST:` console markers: the steps it began, the values it printed
/// (VALUE key=value), and its verdict, PASS or FAIL step. No verdict means QEMU died or the deadline passed.
/// </summary>
internal sealed partial record GuestRun(
    string Scenario, bool Passed, string? FailedStep, IReadOnlyList<string> Steps, IReadOnlyDictionary<string, string> Values,
    bool TimedOut, int ExitCode, string LogPath, IReadOnlyList<string> Console)
{
    public static GuestRun FromConsole(string scenario, GuestConsole console, bool timedOut, int exitCode, TimeSpan timeout)
    {
        var steps = new List<string>();
        var values = new Dictionary<string, string>();
        bool passed = false;
        string? failed = null;
        foreach (var line in console.Lines)
        {
            var marker = MarkerLine().Match(line);
            if (!marker.Success)
            {
                continue;
            }
            string rest = marker.Groups["rest"].Value;
            switch (marker.Groups["kind"].Value)
            {
                case "STEP": steps.Add(rest); break;
                case "VALUE" when rest.Contains('='): values[rest[..rest.IndexOf('=')]] = rest[(rest.IndexOf('=') + 1)..]; break;
                case "PASS": passed = failed == null; break;
                case "FAIL": failed = rest; passed = false; break;
            }
        }
        if (!passed && failed == null)
        {
            failed = timedOut
                ? $"(no verdict within {timeout.TotalSeconds:0} s; last step began: {steps.LastOrDefault() ?? "none"})"
                : $"(no verdict; QEMU exited {exitCode} during step {steps.LastOrDefault() ?? "none"})";
        }
        return new GuestRun(scenario, passed, failed, steps, values, timedOut, exitCode, console.LogPath, console.Lines);
    }

    /// <summary>Fails the test naming the failed step, with the end of the console (the whole of it is in the log file).</summary>
    public GuestRun EnsurePassed()
    {
        if (!Passed)
        {
            var tail = string.Join('\n', Console.Skip(Math.Max(0, Console.Count - 80)));
            throw new Xunit.Sdk.XunitException($"guest scenario '{Scenario}' failed at step {FailedStep}\nconsole log: {LogPath}\n...\n{tail}");
        }
        return this;
    }

    public string Value(string key) =>
        Values.TryGetValue(key, out var value) ? value : throw new Xunit.Sdk.XunitException($"guest scenario '{Scenario}' printed no VALUE {key} (log: {LogPath})");

    // Anywhere in a line: a kernel message can share the console line a marker starts on.
    [GeneratedRegex(@"CAIRN-GUEST: (?<kind>[A-Z]+)(?: (?<rest>.*))?$")]
    private static partial Regex MarkerLine();
}

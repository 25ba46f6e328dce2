using System.Globalization;
using System.Text.RegularExpressions;

namespace Cairn.Testing;

/// <summary>
/// libiscsi's conformance suite, <c>iscsi-test-cu --dataloss -t ALL</c>, held to tgt 1.0.85's result on the same suite:
/// at least as many passes, and none of the tests tgt passes may fail (Fixtures/iscsi-test-cu-tgt-passes.txt, made by
/// scripts/iscsi-tgt-conformance.sh). CUnit counts a skipped test (command not implemented: INVALID COMMAND OPERATION
/// CODE) as passed, for tgt as for us. Verdicts come from the awk script that made the fixture.
/// </summary>
public static partial class IscsiConformance
{
    /// <summary>What tgt 1.0.85 passes of the 230 tests libiscsi-bin 1.19 runs.</summary>
    public const int TgtPasses = 222;

    /// <summary>The suite logs in with both (two I_T nexuses for the reservation tests); a LUN under test must admit them.</summary>
    public static readonly string[] TestInitiators =
        ["iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"];

    /// <summary>Runs the suite against <paramref name="lunUrl"/> and asserts the bar; the counts go to the test output and a summary file.</summary>
    public static async Task RunAndCheckAsync(string lunUrl, string label)
    {
        var run = await ExternalTool.RunAsync("iscsi-test-cu", "libiscsi-bin", TimeSpan.FromMinutes(10), "--dataloss", "-t", "ALL", lunUrl);
        string output = run.StandardOutput + run.StandardError;
        string dir = Environment.GetEnvironmentVariable("CAIRN_TEST_LOG_DIR") ?? Path.GetTempPath();
        Directory.CreateDirectory(dir);
        string log = Path.Combine(dir, $"iscsi-test-cu-{label}.log");
        await File.WriteAllTextAsync(log, output);

        var summary = RunSummary().Match(output);
        Assert.True(summary.Success, "no CUnit run summary in the output; see " + log);
        int total = int.Parse(summary.Groups["total"].Value, CultureInfo.InvariantCulture);
        var verdicts = await VerdictsAsync(log);
        Assert.True(verdicts.Count == total, $"parsed {verdicts.Count} verdicts of {total} tests; see {log}");
        var passed = verdicts.Where(v => v.Value == "passed").Select(v => v.Key).ToHashSet();

        // scripts/test.sh prints every *.summary at the end of the run.
        string line = $"iscsi-test-cu ({label}): {passed.Count} of {total} passed (tgt 1.0.85: {TgtPasses}); log {log}";
        TestContext.Current.TestOutputHelper?.WriteLine(line);
        await File.WriteAllTextAsync(Path.Combine(dir, $"iscsi-test-cu-{label}.summary"), line + "\n");

        var regressions = TgtPassingTests().Where(t => !passed.Contains(t)).ToList();
        Assert.True(regressions.Count == 0, $"tests tgt passes but Cairn does not: {string.Join(", ", regressions)}; see {log}");
        Assert.True(passed.Count >= TgtPasses, $"{passed.Count} passes, fewer than tgt's {TgtPasses}; see {log}");
    }

    private static IEnumerable<string> TgtPassingTests() =>
        File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Fixtures", "iscsi-test-cu-tgt-passes.txt"))
            .Where(line => line.Length > 0 && !line.StartsWith('#'));

    /// <summary>"Suite.Test" → passed/FAILED.</summary>
    private static async Task<Dictionary<string, string>> VerdictsAsync(string log)
    {
        var awk = await ExternalTool.RunAsync("awk", "mawk", TimeSpan.FromMinutes(1), "-f", Path.Combine(AppContext.BaseDirectory, "iscsi-test-cu-verdicts.awk"), log);
        Assert.True(awk.ExitCode == 0, awk.Describe("awk"));
        return awk.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' '))
            .ToDictionary(fields => fields[0], fields => fields[1]);
    }

    [GeneratedRegex(@"tests\s+(?<total>\d+)\s+\d+\s+(?<passed>\d+)\s+\d+\s+\d+")]
    private static partial Regex RunSummary();
}

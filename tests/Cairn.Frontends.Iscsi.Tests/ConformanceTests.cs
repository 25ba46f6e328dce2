using System.Text.RegularExpressions;
using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>
/// libiscsi's conformance suite, <c>iscsi-test-cu --dataloss -t ALL</c>, against the target, logging in with its two test
/// initiator names. The bar is tgt 1.0.85 on the same suite: at least as many passes, and none of the tests tgt passes
/// may fail (Fixtures/iscsi-test-cu-tgt-passes.txt, made by scripts/iscsi-tgt-conformance.sh). CUnit counts a skipped
/// test (command not implemented: INVALID COMMAND OPERATION CODE) as passed, for tgt as for us.
/// </summary>
public sealed partial class ConformanceTests
{
    /// <summary>What tgt 1.0.85 passes of the 230 tests libiscsi-bin 1.19 runs.</summary>
    private const int TgtPasses = 222;
    private static readonly string[] LibiscsiTestInitiators =
        ["iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"];

    [Fact]
    public async Task Iscsi_test_cu_passes_every_test_tgt_passes()
    {
        // Only the suite's two initiator names may log in (it opens sessions with both for the reservation tests).
        await using var h = await ServerHarness.StartAsync(diskAccess: new IscsiAccess(LibiscsiTestInitiators));
        var run = await ExternalTool.RunAsync("iscsi-test-cu", "libiscsi-bin", TimeSpan.FromMinutes(10), "--dataloss", "-t", "ALL", h.Url());
        string output = run.StandardOutput + run.StandardError;
        string log = SaveLog(output);

        var summary = RunSummary().Match(output);
        Assert.True(summary.Success, "no CUnit run summary in the output; see " + log);
        int total = int.Parse(summary.Groups["total"].Value, System.Globalization.CultureInfo.InvariantCulture);
        var verdicts = await VerdictsAsync(log);
        Assert.True(verdicts.Count == total, $"parsed {verdicts.Count} verdicts of {total} tests; see {log}");
        var passed = verdicts.Where(v => v.Value == "passed").Select(v => v.Key).ToHashSet();
        Report($"iscsi-test-cu: {passed.Count} of {total} passed (tgt: {TgtPasses}); log {log}");

        var regressions = TgtPassingTests().Where(t => !passed.Contains(t)).ToList();
        Assert.True(regressions.Count == 0, $"tests tgt passes but Cairn does not: {string.Join(", ", regressions)}; see {log}");
        Assert.True(passed.Count >= TgtPasses, $"{passed.Count} passes, fewer than tgt's {TgtPasses}; see {log}");
    }

    private static IEnumerable<string> TgtPassingTests() =>
        File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Fixtures", "iscsi-test-cu-tgt-passes.txt"))
            .Where(line => line.Length > 0 && !line.StartsWith('#'));

    /// <summary>"Suite.Test" → passed/FAILED, parsed by the same awk script that made the tgt fixture.</summary>
    private static async Task<Dictionary<string, string>> VerdictsAsync(string log)
    {
        var awk = await ExternalTool.RunAsync("awk", "mawk", TimeSpan.FromMinutes(1), "-f", Path.Combine(AppContext.BaseDirectory, "iscsi-test-cu-verdicts.awk"), log);
        Assert.True(awk.ExitCode == 0, awk.Describe("awk"));
        return awk.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' '))
            .ToDictionary(fields => fields[0], fields => fields[1]);
    }

    /// <summary>The whole output goes to a file (CAIRN_TEST_LOG_DIR, which scripts/test.sh sets, or the temp directory).</summary>
    private static string SaveLog(string output)
    {
        string dir = Environment.GetEnvironmentVariable("CAIRN_TEST_LOG_DIR") ?? Path.GetTempPath();
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "iscsi-test-cu.log");
        File.WriteAllText(path, output);
        return path;
    }

    /// <summary>The count goes to the test output and to iscsi-test-cu.summary next to the log, which scripts/test.sh prints.</summary>
    private static void Report(string line)
    {
        TestContext.Current.TestOutputHelper?.WriteLine(line);
        string dir = Environment.GetEnvironmentVariable("CAIRN_TEST_LOG_DIR") ?? Path.GetTempPath();
        File.WriteAllText(Path.Combine(dir, "iscsi-test-cu.summary"), line + "\n");
    }

    [GeneratedRegex(@"tests\s+(?<total>\d+)\s+\d+\s+(?<passed>\d+)\s+\d+\s+\d+")]
    private static partial Regex RunSummary();
}

using System.Text.RegularExpressions;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>
/// libiscsi's conformance suite against the target. Opt-in (CAIRN_ISCSI_TEST_CU=1) until it passes cleanly: it runs
/// for minutes and some of its tests cover features not built yet. The counts go to the test output.
/// </summary>
public sealed partial class ConformanceTests
{
    [Fact]
    public async Task Iscsi_test_cu_runs_against_the_target()
    {
        Assert.SkipUnless(Environment.GetEnvironmentVariable("CAIRN_ISCSI_TEST_CU") == "1", "set CAIRN_ISCSI_TEST_CU=1 to run iscsi-test-cu (slow)");
        await using var h = await ServerHarness.StartAsync();
        string test = Environment.GetEnvironmentVariable("CAIRN_ISCSI_TEST_CU_TESTS") ?? "ALL";
        string[] verbose = Environment.GetEnvironmentVariable("CAIRN_ISCSI_TEST_CU_VERBOSE") == "1" ? ["-V"] : [];
        var r = await ExternalTool.RunAsync("iscsi-test-cu", "libiscsi-bin", TimeSpan.FromMinutes(20), [.. verbose, "--dataloss", "-t", test, h.Url()]);
        string output = r.StandardOutput + r.StandardError;
        TestContext.Current.TestOutputHelper?.WriteLine(output);
        File.WriteAllText(Path.Combine(Path.GetTempPath(), "cairn-iscsi-test-cu.log"), output);
        var summary = RunSummary().Match(output);
        Assert.True(summary.Success, "no CUnit run summary in the output:\n" + output);
        TestContext.Current.TestOutputHelper?.WriteLine($"iscsi-test-cu: {summary.Value}");
    }

    [GeneratedRegex(@"tests\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+")]
    private static partial Regex RunSummary();
}

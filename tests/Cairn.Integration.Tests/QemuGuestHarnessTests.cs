using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>The guest harness itself: a failing step and a stalled guest are reported as such, never as a pass.</summary>
public sealed class QemuGuestHarnessTests
{
    [Fact]
    public async Task A_failing_step_is_reported_by_name_with_the_values_printed_before_it()
    {
        using var tmp = new TempDirectory();
        var scenario = tmp.File("doomed.sh");
        await File.WriteAllTextAsync(scenario, "value answer \"$CAIRN_ANSWER\"\nstep doomed false\nstep unreachable true\n");

        var run = await QemuGuest.RunAsync(scenario, new Dictionary<string, string> { ["answer"] = "42" }, TimeSpan.FromMinutes(3));

        Assert.False(run.Passed);
        Assert.False(run.TimedOut);
        Assert.Equal("doomed", run.FailedStep);
        Assert.Equal("42", run.Value("answer"));
        Assert.DoesNotContain("unreachable", run.Steps);
        var failure = Assert.Throws<Xunit.Sdk.XunitException>(() => run.EnsurePassed());
        Assert.Contains("failed at step doomed", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_guest_that_overruns_its_deadline_is_killed_and_reported_without_a_verdict()
    {
        using var tmp = new TempDirectory();
        var scenario = tmp.File("stall.sh");
        await File.WriteAllTextAsync(scenario, "step stall sleep 600\n");
        var started = DateTime.UtcNow;

        var run = await QemuGuest.RunAsync(scenario, new Dictionary<string, string>(), TimeSpan.FromSeconds(30));

        Assert.True(run.TimedOut);
        Assert.False(run.Passed);
        Assert.StartsWith("(no verdict within 30 s", run.FailedStep, StringComparison.Ordinal);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromMinutes(2), "QEMU outlived its deadline by far: the kill did not work");
    }
}

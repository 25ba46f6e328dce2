using System.Diagnostics;

namespace Cairn.Integration.Tests.Support;

/// <summary>
/// Boots the kernel-initiator test guest (scripts/guest: Debian's kernel under QEMU's TCG) with one scenario and
/// collects its verdict from the serial console. The console reaches the test output line by line and a log file
/// under .artifacts/guest/logs/; QEMU is killed when the deadline passes, the test is cancelled or anything throws.
/// The guest sees the host's loopback as 10.0.2.2, so scenarios reach a cairnd on 127.0.0.1.
/// </summary>
internal static class QemuGuest
{
    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(10);
    private static readonly SemaphoreSlim BuildLock = new(1, 1);
    private static bool _built;

    private static string GuestDirectory => Path.Combine(RepoPaths.Root, "scripts", "guest");

    /// <summary>
    /// Runs scripts/guest/scenarios/<paramref name="scenario"/>.sh, or the script at that path; each parameter becomes
    /// cairn.NAME=VALUE on the kernel command line (CAIRN_NAME in the scenario).
    /// </summary>
    public static async Task<GuestRun> RunAsync(string scenario, IReadOnlyDictionary<string, string> parameters, TimeSpan timeout)
    {
        ToolRun.ResolveOrThrow("qemu-system-x86_64");
        await EnsureBuiltAsync();
        var psi = new ProcessStartInfo(Path.Combine(GuestDirectory, "run.sh"))
        {
            RedirectStandardInput = true, // QEMU's serial console must not take over the test runner's terminal
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(scenario);
        foreach (var (name, value) in parameters)
        {
            psi.ArgumentList.Add($"cairn.{name}={value}");
        }
        // A backstop inside run.sh: QEMU dies shortly after our deadline even if this test process is gone.
        psi.Environment["CAIRN_GUEST_TIMEOUT_S"] = ((int)timeout.TotalSeconds + 30).ToString();
        using var console = new GuestConsole(LogPath(scenario));
        console.Add($"$ scripts/guest/run.sh {string.Join(' ', psi.ArgumentList)}");
        var (timedOut, exitCode) = await RunToEndAsync(psi, console, timeout);
        return GuestRun.FromConsole(scenario, console, timedOut, exitCode, timeout);
    }

    private static async Task<(bool TimedOut, int ExitCode)> RunToEndAsync(ProcessStartInfo psi, GuestConsole console, TimeSpan timeout)
    {
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start scripts/guest/run.sh");
        process.OutputDataReceived += (_, e) => console.Add(e.Data);
        process.ErrorDataReceived += (_, e) => console.Add(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        deadline.CancelAfter(timeout);
        bool timedOut = false;
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            timedOut = true;
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None);
            }
        }
        process.WaitForExit(); // drains the asynchronous console readers
        return (timedOut, process.ExitCode);
    }

    /// <summary>Builds the guest once per test run (a no-op when scripts/guest/build.sh finds its cache current).</summary>
    private static async Task EnsureBuiltAsync()
    {
        await BuildLock.WaitAsync();
        try
        {
            if (!_built)
            {
                (await ToolRun.RunAsync(Path.Combine(GuestDirectory, "build.sh"), [], BuildTimeout)).EnsureSuccess();
                _built = true;
            }
        }
        finally
        {
            BuildLock.Release();
        }
    }

    private static string LogPath(string scenario)
    {
        var directory = Path.Combine(RepoPaths.Root, ".artifacts", "guest", "logs");
        Directory.CreateDirectory(directory);
        return Path.Combine(directory, $"{Path.GetFileNameWithoutExtension(scenario)}-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Environment.ProcessId}.log");
    }
}

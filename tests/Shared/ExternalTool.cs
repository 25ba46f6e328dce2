using System.Diagnostics;

namespace Cairn.Testing;

/// <summary>Runs a real protocol client (nbdinfo, iscsi-ls, qemu-img, ...) as a child process. A missing tool fails the test with the package to install, never a silent skip.</summary>
public static class ExternalTool
{
    public sealed record Result(int ExitCode, string StandardOutput, string StandardError)
    {
        public string Describe(string tool) => $"{tool} exited {ExitCode}\n--- stdout ---\n{StandardOutput}\n--- stderr ---\n{StandardError}";
    }

    public static Task<Result> RunAsync(string tool, string package, TimeSpan timeout, params string[] arguments) =>
        RunAsync(tool, package, timeout, new Dictionary<string, string>(), arguments);

    /// <summary>Runs the tool with extra environment variables (libiscsi takes the mutual CHAP secret that way).</summary>
    public static async Task<Result> RunAsync(string tool, string package, TimeSpan timeout, IReadOnlyDictionary<string, string> environment, params string[] arguments)
    {
        string path = Find(tool) ?? throw new Xunit.Sdk.XunitException(
            $"'{tool}' is not installed; these interoperability tests need it. Install it with: apt-get install -y {package}");
        var start = new ProcessStartInfo(path)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }
        using var process = Process.Start(start) ?? throw new Xunit.Sdk.XunitException($"could not start {path}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
            throw new Xunit.Sdk.XunitException($"{tool} {string.Join(' ', arguments)} did not finish within {timeout.TotalSeconds} s and was killed\n{await stdout}\n{await stderr}");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }

    private static string? Find(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            var candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}

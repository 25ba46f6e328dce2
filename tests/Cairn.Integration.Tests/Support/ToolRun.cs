using System.Diagnostics;
using System.Text;

namespace Cairn.Integration.Tests.Support;

public sealed record ToolResult(string Command, int ExitCode, string Stdout, string Stderr)
{
    public ToolResult EnsureSuccess()
    {
        if (ExitCode != 0)
        {
            throw new InvalidOperationException($"`{Command}` exited {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
        }
        return this;
    }
}

/// <summary>Runs a real external program (nbdinfo, fio, qemu-img, ...) with a deadline, killing it if it overruns.</summary>
internal static class ToolRun
{
    private static readonly Dictionary<string, string> PackageOf = new()
    {
        ["nbdinfo"] = "libnbd-bin", ["nbdcopy"] = "libnbd-bin", ["fio"] = "fio",
        ["qemu-img"] = "qemu-utils", ["nbdkit"] = "nbdkit", ["etcd"] = "etcd-server", ["iscsi-ls"] = "libiscsi-bin", ["iscsi-inq"] = "libiscsi-bin",
        ["qemu-system-x86_64"] = "qemu-system-x86", ["debugfs"] = "e2fsprogs",
    };

    public static async Task<ToolResult> RunAsync(string program, IEnumerable<string> args, TimeSpan timeout,
        IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(ResolveOrThrow(program))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }
        var command = program + " " + string.Join(' ', psi.ArgumentList);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start " + program);
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data != null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"`{command}` did not finish within {timeout.TotalSeconds:0} s\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        process.WaitForExit(); // drains the async output readers
        return new ToolResult(command, process.ExitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Finds a program on PATH, or fails naming the Debian package that provides it.</summary>
    public static string ResolveOrThrow(string program)
    {
        if (Path.IsPathRooted(program))
        {
            return program;
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Concat(["/usr/sbin", "/sbin"]))
        {
            var candidate = Path.Combine(dir, program);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        var package = PackageOf.TryGetValue(program, out var p) ? p : program;
        throw new FileNotFoundException($"{program} is not installed: run scripts/setup.sh (apt-get install {package})");
    }
}

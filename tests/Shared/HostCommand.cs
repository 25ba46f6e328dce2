using System.Diagnostics;

namespace Cairn.Testing;

/// <summary>
/// Runs a short host command (ip, losetup, mount, ...) to completion with a deadline. Unlike <see cref="ExternalTool"/>
/// it needs no test context, so fixtures can call it while disposing and while sweeping leftovers of earlier runs.
/// </summary>
public static class HostCommand
{
    public sealed record Result(string Command, int ExitCode, string StandardOutput, string StandardError)
    {
        public bool Succeeded => ExitCode == 0;
    }

    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Runs the command; a failure is returned, not thrown (cleanup paths want to carry on).</summary>
    public static async Task<Result> TryAsync(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(Resolve(program))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        string command = program + " " + string.Join(' ', arguments);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {command}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(DefaultTimeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
            return new Result(command, -1, await stdout, $"killed after {DefaultTimeout.TotalSeconds} s\n{await stderr}");
        }
        return new Result(command, process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs the command and throws, with its output, if it fails.</summary>
    public static async Task<string> RunAsync(string program, params string[] arguments)
    {
        var result = await TryAsync(program, arguments);
        return result.Succeeded
            ? result.StandardOutput
            : throw new InvalidOperationException($"`{result.Command}` exited {result.ExitCode}: {result.StandardError.Trim()} {result.StandardOutput.Trim()}");
    }

    /// <summary>Finds a program on PATH or in the sbin directories, where ip, losetup and mkfs live.</summary>
    public static string Resolve(string program)
    {
        if (Path.IsPathRooted(program))
        {
            return program;
        }
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
        return dirs.Select(dir => Path.Combine(dir, program)).FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"{program} is not installed; scripts/setup.sh installs what the tests need");
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace Cairn.Integration.Tests.Support;

/// <summary>
/// A real cairnd process on loopback with ephemeral ports, learnt from the lines it prints at start-up.
/// Dispose kills it; <see cref="KillHard"/> simulates a crash (SIGKILL) and <see cref="RestartAsync"/> reopens the same data directory.
/// </summary>
internal sealed partial class CairnDaemon : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private readonly StringBuilder _log = new();
    private Process? _process;

    private CairnDaemon(string dataDirectory, bool ownsData, string[] extraArgs)
    {
        DataDirectory = dataDirectory;
        OwnsData = ownsData;
        ExtraArgs = extraArgs;
    }

    public string DataDirectory { get; }
    private bool OwnsData { get; }
    private string[] ExtraArgs { get; }
    public string ApiUrl { get; private set; } = "";
    public int NbdPort { get; private set; }
    public int IscsiPort { get; private set; }
    public string Log { get { lock (_log) { return _log.ToString(); } } }

    /// <summary>Waits until the daemon has logged <paramref name="text"/>: its log reaches us through a pipe, after the
    /// IO that caused it may already have been answered.</summary>
    public async Task WaitForLogAsync(string text, TimeSpan? timeout = null)
    {
        try
        {
            await Eventually.HoldsAsync(() => Task.FromResult(Log.Contains(text, StringComparison.Ordinal)), timeout ?? TimeSpan.FromSeconds(60),
                $"cairnd logs \"{text}\"");
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}\n{Log}", e);
        }
    }

    public string NbdUri(string export) => $"nbd://127.0.0.1:{NbdPort}/{export}";

    public static async Task<CairnDaemon> StartAsync(string? dataDirectory = null, params string[] extraArgs)
    {
        var owns = dataDirectory == null;
        dataDirectory ??= Path.Combine(Path.GetTempPath(), "cairn-it-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dataDirectory);
        var daemon = new CairnDaemon(dataDirectory, owns, extraArgs);
        await daemon.LaunchAsync();
        return daemon;
    }

    private async Task LaunchAsync()
    {
        var psi = new ProcessStartInfo(RepoPaths.Daemon)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--data-dir", DataDirectory, "--nbd-listen", "127.0.0.1:0", "--iscsi-listen", "127.0.0.1:0", "--api-listen", "http://127.0.0.1:0" }.Concat(ExtraArgs))
        {
            psi.ArgumentList.Add(a);
        }
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start cairnd");
        _process = process;
        process.OutputDataReceived += (_, e) => OnLine(e.Data, ready);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data, null);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var exited = process.WaitForExitAsync();
        var winner = await Task.WhenAny(ready.Task, exited, Task.Delay(StartTimeout));
        if (winner != ready.Task)
        {
            KillHard();
            throw new InvalidOperationException($"cairnd did not become ready (exited: {process.HasExited})\n{Log}");
        }
    }

    private void OnLine(string? line, TaskCompletionSource? ready)
    {
        if (line == null)
        {
            return;
        }
        lock (_log)
        {
            _log.AppendLine(line);
        }
        var api = ApiLine().Match(line);
        if (api.Success)
        {
            ApiUrl = api.Groups[1].Value;
        }
        var iscsi = IscsiLine().Match(line);
        if (iscsi.Success)
        {
            IscsiPort = int.Parse(iscsi.Groups[1].Value);
        }
        var nbd = NbdLine().Match(line);
        if (nbd.Success)
        {
            NbdPort = int.Parse(nbd.Groups[1].Value);
        }
        if (line.StartsWith("cairnd: ready", StringComparison.Ordinal))
        {
            ready?.TrySetResult();
        }
    }

    /// <summary>Runs the real `cairn` CLI against this daemon.</summary>
    public Task<ToolResult> CliAsync(params string[] args) =>
        ToolRun.RunAsync(RepoPaths.Cli, new[] { "--api", ApiUrl }.Concat(args), TimeSpan.FromSeconds(60));

    /// <summary>SIGKILL: no chance to flush anything, as in a crash.</summary>
    public void KillHard()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(30_000);
        }
    }

    /// <summary>SIGTERM and wait for a clean exit.</summary>
    public async Task StopAsync()
    {
        if (_process is { HasExited: false } p)
        {
            _ = SendSignal(p.Id, 15);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            try
            {
                await p.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                KillHard();
                throw new TimeoutException("cairnd did not stop within 60 s of SIGTERM\n" + Log);
            }
        }
    }

    public int? ExitCode => _process is { HasExited: true } p ? p.ExitCode : null;
    public bool IsRunning => _process is { HasExited: false };

    /// <summary>Starts cairnd again on the same data directory (new ports).</summary>
    public async Task RestartAsync()
    {
        KillHard();
        _process?.Dispose();
        lock (_log)
        {
            _log.AppendLine("---- restart ----");
        }
        await LaunchAsync();
    }

    public async ValueTask DisposeAsync()
    {
        KillHard();
        _process?.Dispose();
        await Task.Yield();
        if (OwnsData)
        {
            try
            {
                Directory.Delete(DataDirectory, recursive: true);
            }
            catch (IOException)
            {
                // Left for /tmp cleanup.
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SendSignal(int pid, int signal);

    [GeneratedRegex(@"^cairnd: api listening on (\S+)")]
    private static partial Regex ApiLine();

    [GeneratedRegex(@"^cairnd: iscsi listening on \S+:(\d+)")]
    private static partial Regex IscsiLine();

    [GeneratedRegex(@"^cairnd: nbd listening on \S+:(\d+)")]
    private static partial Regex NbdLine();
}

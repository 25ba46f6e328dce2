using System.Diagnostics;

namespace Cairn.Testing;

/// <summary>
/// A long-running process inside a network namespace (`ip netns exec NS program ...`; ip execs the program, so the
/// process id is the program's own and SIGKILL reaches it directly). Its output goes to a log file and a short tail
/// kept in memory for failure messages; a line matching <c>readyLine</c> completes <see cref="Ready"/>.
/// </summary>
public sealed class NamespacedProcess : IAsyncDisposable
{
    private const int TailLines = 60;
    private readonly Process _process;
    private readonly Queue<string> _tail = new();
    private readonly StreamWriter _log;
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Func<string, bool>? _readyLine;
    private readonly Action<string>? _onLine;
    private bool _closed;

    private NamespacedProcess(Process process, string logPath, Func<string, bool>? readyLine, Action<string>? onLine)
    {
        _process = process;
        _readyLine = readyLine;
        _onLine = onLine;
        LogPath = logPath;
        _log = new StreamWriter(new FileStream(logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
    }

    /// <summary>Where every line the process printed goes (appended across restarts).</summary>
    public string LogPath { get; }

    public int Pid => _process.Id;

    public bool IsRunning => !_process.HasExited;

    /// <summary>Completes when the ready line appears; faults if the process exits first.</summary>
    public Task Ready => _ready.Task;

    public static NamespacedProcess Start(string netns, string program, IEnumerable<string> arguments, string logPath,
        Func<string, bool>? readyLine = null, Action<string>? onLine = null)
    {
        var start = new ProcessStartInfo(HostCommand.Resolve("ip"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // never the test runner's stdin
            UseShellExecute = false,
        };
        foreach (string argument in new[] { "netns", "exec", netns, program }.Concat(arguments))
        {
            start.ArgumentList.Add(argument);
        }
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program} in {netns}");
        var started = new NamespacedProcess(process, logPath, readyLine, onLine);
        started._log.WriteLine($"---- {DateTime.UtcNow:O} ip netns exec {netns} {program} {string.Join(' ', arguments)}");
        process.OutputDataReceived += (_, e) => started.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => started.OnLine(e.Data);
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => started._ready.TrySetException(
            new InvalidOperationException($"{program} in {netns} exited with code {process.ExitCode} before it was ready:\n{started.Tail()}"));
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (readyLine is null)
        {
            started._ready.TrySetResult();
        }
        return started;
    }

    /// <summary>Waits for the ready line; kills the process and throws with its output if it does not come in time.</summary>
    public async Task WaitReadyAsync(TimeSpan deadline, string what)
    {
        var winner = await Task.WhenAny(Ready, Task.Delay(deadline));
        if (winner != Ready)
        {
            await KillAsync();
            throw new TimeoutException($"{what} was not ready within {deadline.TotalSeconds} s (log {LogPath}):\n{Tail()}");
        }
        await Ready;
    }

    /// <summary>SIGKILL, as a crash, and waits until the process is gone.</summary>
    public async Task KillAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // Exited between the check and the kill.
        }
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await _process.WaitForExitAsync(cts.Token);
    }

    public string Tail()
    {
        lock (_tail)
        {
            return string.Join('\n', _tail);
        }
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_tail)
        {
            _tail.Enqueue(line);
            while (_tail.Count > TailLines)
            {
                _tail.Dequeue();
            }
            if (!_closed)
            {
                _log.WriteLine(line);
            }
        }
        _onLine?.Invoke(line);
        if (_readyLine?.Invoke(line) == true)
        {
            _ready.TrySetResult();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
        lock (_tail)
        {
            _closed = true;
            _log.Dispose();
        }
    }
}

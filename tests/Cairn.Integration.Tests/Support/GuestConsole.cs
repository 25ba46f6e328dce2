namespace Cairn.Integration.Tests.Support;

/// <summary>The guest's serial console as it arrives: kept for the verdict, echoed to the test output and a log file.</summary>
internal sealed class GuestConsole : IDisposable
{
    private readonly List<string> _lines = [];
    private readonly StreamWriter _log;
    private readonly ITestOutputHelper? _output = TestContext.Current.TestOutputHelper;

    public GuestConsole(string logPath)
    {
        LogPath = logPath;
        _log = new StreamWriter(logPath) { AutoFlush = true };
    }

    public string LogPath { get; }

    public IReadOnlyList<string> Lines
    {
        get { lock (_lines) { return [.. _lines]; } }
    }

    public void Add(string? line)
    {
        if (line == null)
        {
            return;
        }
        lock (_lines)
        {
            _lines.Add(line);
            _log.WriteLine(line);
            try
            {
                _output?.WriteLine(line);
            }
            catch (InvalidOperationException)
            {
                // The test already ended (a straggling line after a kill); the log file still has it.
            }
        }
    }

    public void Dispose()
    {
        lock (_lines)
        {
            _log.Dispose();
        }
    }
}

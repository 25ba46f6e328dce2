using Cairn.Core;

namespace Cairn.Testing;

/// <summary>A fixed set of exports; counts open sessions so tests can check that connections release them.</summary>
public sealed class TestCatalog : IExportCatalog
{
    private readonly Dictionary<string, (IBlockDevice Device, string Description, bool ReadOnly, IscsiAccess? Access)> _exports = new(StringComparer.Ordinal);
    private readonly List<ExportSession> _sessions = [];
    private int _open;

    public string? DefaultExportName { get; set; }

    public int OpenSessions => Volatile.Read(ref _open);

    public IReadOnlyList<ExportSession> Sessions
    {
        get
        {
            lock (_sessions)
            {
                return [.. _sessions];
            }
        }
    }

    public TestCatalog Add(string name, IBlockDevice device, string description = "", bool readOnly = false, IscsiAccess? iscsiAccess = null)
    {
        _exports[name] = (device, description, readOnly, iscsiAccess);
        return this;
    }

    public IReadOnlyList<ExportDescription> ListExports() =>
        _exports.Select(e => new ExportDescription(e.Key, e.Value.Description, e.Value.Device.SizeBytes, e.Value.ReadOnly || e.Value.Device.IsReadOnly, e.Value.Access)).ToList();

    public ExportSession? TryOpen(string exportName, string clientDescription)
    {
        if (!_exports.TryGetValue(exportName, out var export))
        {
            return null;
        }
        Interlocked.Increment(ref _open);
        var session = new ExportSession(exportName, export.Device, clientDescription, _ => Interlocked.Decrement(ref _open));
        lock (_sessions)
        {
            _sessions.Add(session);
        }
        return session;
    }

    /// <summary>Waits until every session has been disposed; connections close asynchronously.</summary>
    public async Task WaitForNoSessionsAsync(int timeoutMs = 10_000)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (OpenSessions != 0)
        {
            if (Environment.TickCount64 > deadline)
            {
                Assert.Fail($"{OpenSessions} export session(s) still open {timeoutMs} ms after their connections ended");
            }
            await Task.Delay(10);
        }
    }
}

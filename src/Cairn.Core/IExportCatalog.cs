namespace Cairn.Core;

/// <summary>
/// What a frontend may serve: the named exports (volumes) of this node. Frontends open a session per
/// client connection so the control plane knows who is attached and can revoke them (forced delete).
/// </summary>
public interface IExportCatalog
{
    /// <summary>The export served for an empty name, or null when there is none.</summary>
    string? DefaultExportName { get; }

    IReadOnlyList<ExportDescription> ListExports();

    /// <summary>Opens an export for one client connection, or returns null when no export has that name.</summary>
    ExportSession? TryOpen(string exportName, string clientDescription);

    /// <summary>One export's description, or null when there is none of that name.</summary>
    ExportDescription? Find(string exportName) => ListExports().FirstOrDefault(e => e.Name == exportName);
}

/// <param name="IscsiAccess">Who may log in over iSCSI; null means <see cref="Cairn.Core.IscsiAccess.Open"/>.</param>
public sealed record ExportDescription(string Name, string Description, long SizeBytes, bool IsReadOnly, IscsiAccess? IscsiAccess = null);

/// <summary>One client's hold on an export. Dispose when the connection ends.</summary>
public sealed class ExportSession : IDisposable
{
    private readonly Action<ExportSession>? _onClose;
    private readonly CancellationTokenSource _revoked = new();
    private int _closed;

    public ExportSession(string exportName, IBlockDevice device, string clientDescription, Action<ExportSession>? onClose = null)
    {
        ExportName = exportName;
        Device = device;
        ClientDescription = clientDescription;
        _onClose = onClose;
    }

    public string ExportName { get; }
    public IBlockDevice Device { get; }
    public string ClientDescription { get; }
    public DateTimeOffset OpenedAt { get; } = DateTimeOffset.UtcNow;

    /// <summary>Cancelled when the control plane takes the export away (forced delete); the frontend must drop the connection.</summary>
    public CancellationToken Revoked => _revoked.Token;

    public void Revoke()
    {
        try
        {
            _revoked.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Already closed: nothing left to revoke.
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            _onClose?.Invoke(this);
            _revoked.Dispose();
        }
    }
}

using Cairn.Core;

namespace Cairn.ControlPlane;

// The frontends' view: every available volume is an export of the same name. Sessions are
// tracked per volume so a delete can see who is attached and a forced delete can revoke them.
public sealed partial class VolumeService
{
    /// <summary>No default export: with several volumes an empty name is ambiguous, and guessing would attach the wrong disk.</summary>
    public string? DefaultExportName => null;

    public IReadOnlyList<ExportDescription> ListExports()
    {
        lock (_lock)
        {
            return [.. _volumes.Values
                .Where(v => v.Engine is not null && !v.Deleting)
                .OrderBy(v => v.Spec.Name, StringComparer.Ordinal)
                .SelectMany(v => SnapshotExports(v).Prepend(
                    new ExportDescription(v.Spec.Name, $"Cairn volume {v.Spec.Name} (pool {v.Spec.Pool})", v.Engine!.SizeBytes, v.Engine.IsReadOnly, v.Spec.IscsiAccess)))];
        }
    }

    public ExportSession? TryOpen(string exportName, string clientDescription)
    {
        if (exportName.Contains(SnapshotSeparator, StringComparison.Ordinal))
        {
            return TryOpenSnapshot(exportName, clientDescription);
        }
        lock (_lock)
        {
            if (!_volumes.TryGetValue(exportName, out var state) || state.Engine is null || state.Deleting)
            {
                return null;
            }
            var session = new ExportSession(exportName, state.Engine, clientDescription, closed =>
            {
                lock (_lock)
                {
                    state.Sessions.Remove(closed);
                }
            });
            state.Sessions.Add(session);
            return session;
        }
    }
}

using System.Diagnostics.CodeAnalysis;
using Cairn.BlockStore;

namespace Cairn.ControlPlane;

/// <summary>
/// The slice of <see cref="BlockPool"/> the control plane uses. A seam so the control plane, API and
/// CLI tests can run on an in-memory pool, and so a later remote (replica-service) pool can plug in.
/// </summary>
public interface IVolumePool : IDisposable
{
    string Name { get; }
    string Directory { get; }
    long CapacityBytes { get; }
    long UsedBytes { get; }
    long FreeBytes { get; }

    /// <summary>Why the pool refuses IO (a failed drive), or null while it is healthy.</summary>
    string? Fault => null;

    IReadOnlyList<StoredVolumeInfo> ListVolumes();

    StoredVolume CreateVolume(string volumeId, long sizeBytes);

    bool TryGetVolume(string volumeId, [NotNullWhen(true)] out StoredVolume? volume);

    void DeleteVolume(string volumeId);
}

/// <summary>A local block-store pool.</summary>
public sealed class LocalVolumePool(BlockPool pool) : IVolumePool, ISnapshotPool
{
    public string Name => pool.Name;
    public string Directory => pool.Directory;
    public long CapacityBytes => pool.CapacityBytes;
    public long UsedBytes => pool.UsedBytes;
    public long FreeBytes => pool.FreeBytes;
    public string? Fault => pool.Fault;

    public IReadOnlyList<StoredVolumeInfo> ListVolumes() => pool.ListVolumes();

    public StoredVolume CreateVolume(string volumeId, long sizeBytes) => pool.CreateVolume(volumeId, sizeBytes);

    public bool TryGetVolume(string volumeId, [NotNullWhen(true)] out StoredVolume? volume) =>
        pool.TryGetVolume(volumeId, out volume) && volume is not null;

    public void DeleteVolume(string volumeId) => pool.DeleteVolume(volumeId);

    public SnapshotInfo CreateSnapshot(string volumeId, string name) => pool.CreateSnapshot(volumeId, name);

    public IReadOnlyList<SnapshotInfo> ListSnapshots(string volumeId) => pool.ListSnapshots(volumeId);

    public bool TryGetSnapshot(string volumeId, string name, out StoredSnapshot? snapshot) => pool.TryGetSnapshot(volumeId, name, out snapshot);

    public void DeleteSnapshot(string volumeId, string name) => pool.DeleteSnapshot(volumeId, name);

    public StoredVolume CloneVolume(string newVolumeId, string sourceVolumeId, string snapshotName) => pool.CloneVolume(newVolumeId, sourceVolumeId, snapshotName);

    public void RevertVolume(string volumeId, string snapshotName) => pool.RevertVolume(volumeId, snapshotName);

    public ScrubResult ScrubVolume(string volumeId, IProgress<ScrubProgress>? progress, long bytesPerSecond, CancellationToken cancellationToken)
        => pool.ScrubVolume(volumeId, progress, bytesPerSecond, cancellationToken);

    public BlockRewriteResult RewriteBlockInPlace(string volumeId, string? snapshotName, long offsetBytes, ReadOnlySpan<byte> block)
        => pool.RewriteBlockInPlace(volumeId, snapshotName, offsetBytes, block);

    public void Dispose() => pool.Dispose();
}

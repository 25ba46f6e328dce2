using Cairn.BlockStore;

namespace Cairn.ControlPlane;

/// <summary>
/// A pool that keeps snapshots and clones of its volumes. Snapshot metadata lives with the data, in the pool's
/// journal (atomic with the blocks it describes), not in the cluster store: a snapshot is part of a volume's data on
/// the node that owns it, so spec and data cannot disagree about it. Clones are volumes and get a spec.
/// </summary>
public interface ISnapshotPool
{
    SnapshotInfo CreateSnapshot(string volumeId, string name);

    IReadOnlyList<SnapshotInfo> ListSnapshots(string volumeId);

    bool TryGetSnapshot(string volumeId, string name, out StoredSnapshot? snapshot);

    void DeleteSnapshot(string volumeId, string name);

    StoredVolume CloneVolume(string newVolumeId, string sourceVolumeId, string snapshotName);

    void RevertVolume(string volumeId, string snapshotName);

    ScrubResult ScrubVolume(string volumeId, IProgress<ScrubProgress>? progress, long bytesPerSecond, CancellationToken cancellationToken);

    /// <summary>Mends a bad block of the volume or of one of its snapshots in place from a good copy (see <see cref="BlockPool.RewriteBlockInPlace"/>).</summary>
    BlockRewriteResult RewriteBlockInPlace(string volumeId, string? snapshotName, long offsetBytes, ReadOnlySpan<byte> block);
}

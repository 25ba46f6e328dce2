using Cairn.BlockStore;
using Cairn.Replication;

namespace Cairn.ControlPlane.Replication;

/// <summary>A hosted replica's block-store volume as the replica protocol's Grow and snapshot requests reach it.</summary>
internal sealed class StoredVolumeControl(StoredVolume volume, ISnapshotPool? pool, string volumeId) : IReplicaVolumeControl
{
    public void Grow(long sizeBytes)
    {
        if (sizeBytes > volume.SizeBytes)
        {
            volume.Grow(sizeBytes);
        }
    }

    public void CreateSnapshot(string name) => Pool.CreateSnapshot(volumeId, name);

    public void DeleteSnapshot(string name) => Pool.DeleteSnapshot(volumeId, name);

    public void DeleteAllSnapshots()
    {
        if (pool is null)
        {
            return; // a pool without snapshots holds none to delete
        }
        foreach (var snapshot in pool.ListSnapshots(volumeId))
        {
            pool.DeleteSnapshot(volumeId, snapshot.Name);
        }
    }

    public void RevertToSnapshot(string name) => Pool.RevertVolume(volumeId, name);

    /// <summary>The block through the pool's snapshot device, which checks its checksum; zeros past the snapshot's end.</summary>
    public ValueTask ReadSnapshotBlockAsync(string name, long offsetBytes, Memory<byte> block, CancellationToken cancellationToken)
    {
        if (pool is null)
        {
            throw new NotSupportedException("this replica's pool keeps no snapshots");
        }
        if (!pool.TryGetSnapshot(volumeId, name, out var snapshot))
        {
            throw new KeyNotFoundException($"volume '{volumeId}' has no snapshot named '{name}' on this replica");
        }
        if (offsetBytes < 0 || offsetBytes >= snapshot!.SizeBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(offsetBytes), offsetBytes, $"snapshot '{name}' is {snapshot!.SizeBytes} bytes");
        }
        int inside = (int)Math.Min(block.Length, snapshot.SizeBytes - offsetBytes);
        block.Span[inside..].Clear();
        return snapshot.ReadAsync(offsetBytes, block[..inside], cancellationToken);
    }

    /// <summary>The same CRC-guarded in-place rewrite the owner mends its own snapshots with.</summary>
    public SnapshotRewrite RewriteSnapshotBlock(string name, long offsetBytes, ReadOnlySpan<byte> block) =>
        new PoolSnapshotImages(pool ?? throw new NotSupportedException("this replica's pool keeps no snapshots"), volumeId).RewriteBlock(name, offsetBytes, block);

    private ISnapshotPool Pool => pool ?? throw new InvalidOperationException("this replica's pool keeps no snapshots");
}

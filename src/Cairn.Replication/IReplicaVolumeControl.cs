namespace Cairn.Replication;

/// <summary>
/// What a replica's node does to the volume behind a <see cref="ReplicaTarget"/> beyond its blocks: grow it and
/// manage its snapshots (the block store's volume, on that node). Failures are reported as exceptions: a
/// <see cref="Cairn.Core.BlockDeviceException"/> with its error, <see cref="ArgumentException"/> or
/// <see cref="InvalidOperationException"/> for a request that makes no sense there (a name taken or unknown, a shrink).
/// </summary>
public interface IReplicaVolumeControl
{
    void Grow(long sizeBytes);

    void CreateSnapshot(string name);

    void DeleteSnapshot(string name);

    /// <summary>Deletes every snapshot of the volume (nothing to do when it has none).</summary>
    void DeleteAllSnapshots();

    /// <summary>Makes the volume's content that of snapshot <paramref name="name"/> again.</summary>
    void RevertToSnapshot(string name);

    /// <summary>
    /// Fills <paramref name="block"/> (<see cref="ReplicaProtocol.SnapshotBlockBytes"/>) with the block of snapshot
    /// <paramref name="name"/> at <paramref name="offsetBytes"/>, checked against its checksum (a mismatch is a
    /// <see cref="Cairn.Core.BlockDeviceException"/> with <see cref="Cairn.Core.BlockError.Io"/>); bytes past the
    /// snapshot's end read as zeros; an unknown snapshot or an offset past its end is a <see cref="KeyNotFoundException"/>
    /// or <see cref="ArgumentException"/>. A node that keeps no snapshots does not support it.
    /// </summary>
    ValueTask ReadSnapshotBlockAsync(string name, long offsetBytes, Memory<byte> block, CancellationToken cancellationToken) =>
        ValueTask.FromException(new NotSupportedException("this replica's volume keeps no snapshots to read"));

    /// <summary>
    /// Mends snapshot <paramref name="name"/>'s 4 KiB block at <paramref name="offsetBytes"/> in place with
    /// <paramref name="block"/>, durably when it returns, only if <paramref name="block"/> is exactly what the block's
    /// checksum expects (see <see cref="ISnapshotImages.RewriteBlock"/>). Errors as for <see cref="ReadSnapshotBlockAsync"/>.
    /// </summary>
    SnapshotRewrite RewriteSnapshotBlock(string name, long offsetBytes, ReadOnlySpan<byte> block) =>
        throw new NotSupportedException("this replica's volume keeps no snapshots to mend");
}

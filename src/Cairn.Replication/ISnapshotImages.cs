using Cairn.Core;

namespace Cairn.Replication;

/// <summary>One snapshot of the owner's copy, readable as a device (what a full rebuild copies to a replica).</summary>
public sealed record SnapshotImage(string Name, IBlockDevice Image);

/// <summary>
/// The owner's snapshots of a replicated volume, oldest first. A full rebuild recreates them on the new replica, in
/// order, before it copies the live volume: so a replica that is admitted holds the same snapshots as its owner and
/// can be promoted without losing any.
/// </summary>
public interface ISnapshotImages
{
    IReadOnlyList<SnapshotImage> List();
}

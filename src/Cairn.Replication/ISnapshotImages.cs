using Cairn.Core;

namespace Cairn.Replication;

/// <summary>One snapshot of the owner's copy, readable as a device (what a full rebuild copies to a replica).</summary>
public sealed record SnapshotImage(string Name, IBlockDevice Image);

/// <summary>What rewriting one block of the owner's snapshot in place did (<see cref="ISnapshotImages.RewriteBlock"/>).</summary>
public enum SnapshotRewriteOutcome
{
    /// <summary>Written over the bad copy, durably: it reads correctly again.</summary>
    Rewritten,

    /// <summary>It already read correctly: nothing written.</summary>
    AlreadyGood,

    /// <summary>The data is not what the block's checksum expects: nothing written (that copy is not the snapshot's content).</summary>
    WrongData,

    /// <summary>The snapshot holds no data block there any more (it was deleted): nothing written.</summary>
    NotHeld,
}

/// <summary>An in-place rewrite's outcome and why.</summary>
public sealed record SnapshotRewrite(SnapshotRewriteOutcome Outcome, string Detail);

/// <summary>
/// The owner's snapshots of a replicated volume, oldest first. A full rebuild recreates them on the new replica, in
/// order, before it copies the live volume: so a replica that is admitted holds the same snapshots as its owner and
/// can be promoted without losing any. The same holds the other way round: a snapshot's block is the same on every
/// in-sync replica, which is what lets the owner mend its own bad copy from a replica's.
/// </summary>
public interface ISnapshotImages
{
    IReadOnlyList<SnapshotImage> List();

    /// <summary>
    /// Mends the owner's copy of snapshot <paramref name="name"/>'s 4 KiB block at <paramref name="offsetBytes"/> in
    /// place with <paramref name="block"/> (padded with zeros past the snapshot's end), durably when it returns, and
    /// only if <paramref name="block"/> is exactly what the block's checksum expects. A block the live volume shares is
    /// mended for it too. Failures to write are a <see cref="BlockDeviceException"/>.
    /// </summary>
    SnapshotRewrite RewriteBlock(string name, long offsetBytes, ReadOnlySpan<byte> block);
}

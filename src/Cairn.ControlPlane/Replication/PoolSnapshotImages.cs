using Cairn.BlockStore;
using Cairn.Replication;

namespace Cairn.ControlPlane.Replication;

/// <summary>An owned volume's snapshots in its local pool, as a full rebuild copies them to a replica and a scrub mends them.</summary>
internal sealed class PoolSnapshotImages(ISnapshotPool pool, string volumeId) : ISnapshotImages
{
    /// <summary>Oldest first; one deleted between listing and opening is left out (the rebuild notices the change and starts over).</summary>
    public IReadOnlyList<SnapshotImage> List() =>
        [.. pool.ListSnapshots(volumeId)
            .Select(s => pool.TryGetSnapshot(volumeId, s.Name, out var image) ? new SnapshotImage(s.Name, image!) : null)
            .OfType<SnapshotImage>()];

    public SnapshotRewrite RewriteBlock(string name, long offsetBytes, ReadOnlySpan<byte> block)
    {
        var result = pool.RewriteBlockInPlace(volumeId, name, offsetBytes, block);
        var outcome = result.Outcome switch
        {
            BlockRewriteOutcome.Rewritten => SnapshotRewriteOutcome.Rewritten,
            BlockRewriteOutcome.AlreadyGood => SnapshotRewriteOutcome.AlreadyGood,
            BlockRewriteOutcome.WrongData => SnapshotRewriteOutcome.WrongData,
            _ => SnapshotRewriteOutcome.NotHeld,
        };
        return new SnapshotRewrite(outcome, result.Detail);
    }
}

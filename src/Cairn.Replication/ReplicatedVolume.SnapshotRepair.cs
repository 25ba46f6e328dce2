using Cairn.Core;

namespace Cairn.Replication;

/// <summary>A bad block of one of the owner's snapshots: the snapshot's name and the block's byte offset (a multiple of 4 KiB).</summary>
public readonly record struct SnapshotBlock(string Snapshot, long OffsetBytes);

/// <summary>
/// Repair of the owner's snapshots' bad blocks (invariant 4). Every in-sync replica holds the owner's snapshots with the
/// same content: a snapshot is taken on every replica at the same point in the write order (the volume quiesced), and
/// a full rebuild recreates the owner's snapshots before a replica is admitted. So the owner reads the block of the
/// same snapshot from each in-sync replica in turn (the replica's store checks its checksum: a bad copy answers
/// <see cref="ReplicaStatus.Io"/>) and mends its own copy in place (<see cref="ISnapshotImages.RewriteBlock"/>), which
/// takes only the exact content the block's checksum expects.
/// <para>
/// No ordering with client writes is needed, unlike the live volume's repair (no repair gate): a snapshot never
/// changes on any replica, so the copy read is current whenever it is read. A block the live volume still shares is
/// mended in place for the volume too, and a client write racing that is harmless: it goes to a fresh block (the
/// snapshot keeps the old one), and the rewrite restores only the bytes the old block already had to hold.
/// </para>
/// </summary>
public sealed partial class ReplicatedVolume
{
    /// <summary>
    /// Repairs the owner's bad snapshot blocks (found by a scrub): each is mended in place from the first in-sync
    /// replica whose copy of the same snapshot reads correctly. Reports each block (<see cref="BlockRepair.Snapshot"/> set).
    /// </summary>
    /// <exception cref="BlockDeviceException">The volume is fenced or its owner's lease lapsed: nothing more is repaired.</exception>
    public async Task RepairSnapshotBlocksAsync(IEnumerable<SnapshotBlock> blocks, Action<BlockRepair> report, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        ArgumentNullException.ThrowIfNull(report);
        byte[] buffer = new byte[ReplicaProtocol.SnapshotBlockBytes];
        foreach (var block in blocks)
        {
            ThrowIfUnavailable();
            if (block.OffsetBytes < 0 || block.OffsetBytes % ReplicaProtocol.SnapshotBlockBytes != 0)
            {
                throw new ArgumentOutOfRangeException(nameof(blocks), block.OffsetBytes, $"a snapshot block starts at a multiple of {ReplicaProtocol.SnapshotBlockBytes} bytes");
            }
            var repair = await RepairSnapshotBlockAsync(block, buffer, cancellationToken);
            report(repair with { Snapshot = block.Snapshot });
        }
    }

    private async Task<BlockRepair> RepairSnapshotBlockAsync(SnapshotBlock bad, byte[] buffer, CancellationToken cancellationToken)
    {
        if (Snapshots is not { } snapshots)
        {
            return new BlockRepair(null, bad.OffsetBytes, BlockRepairOutcome.Unrecoverable, "the owner's copy keeps no snapshots it could mend");
        }
        byte[] name = EncodeSnapshotName(bad.Snapshot);
        List<string>? failures = null;
        foreach (var replica in _membership.InSync)
        {
            var status = await ReadRemoteAsync(replica, ReplicaOp.ReadSnapshotBlock, bad.OffsetBytes, (uint)name.Length, name, buffer, cancellationToken);
            if (status != ReplicaStatus.Ok)
            {
                (failures ??= []).Add($"{replica.Replica}: {DescribeFailedSnapshotRead(status, bad.Snapshot)}");
                continue;
            }
            SnapshotRewrite rewrite;
            try
            {
                rewrite = snapshots.RewriteBlock(bad.Snapshot, bad.OffsetBytes, buffer);
            }
            catch (BlockDeviceException e)
            {
                return new BlockRepair(null, bad.OffsetBytes, BlockRepairOutcome.Unrecoverable,
                    $"the copy on {replica.Replica} is good, but rewriting this one failed: {e.Message}");
            }
            switch (rewrite.Outcome)
            {
                case SnapshotRewriteOutcome.Rewritten:
                    return new BlockRepair(null, bad.OffsetBytes, BlockRepairOutcome.Repaired, $"rewritten from the copy on {replica.Replica}");
                case SnapshotRewriteOutcome.AlreadyGood:
                    return new BlockRepair(null, bad.OffsetBytes, BlockRepairOutcome.AlreadyGood, "reads correctly now: nothing to rewrite");
                case SnapshotRewriteOutcome.NotHeld:
                    return new BlockRepair(null, bad.OffsetBytes, BlockRepairOutcome.Unrecoverable, rewrite.Detail);
                default:
                    (failures ??= []).Add($"{replica.Replica}: its copy is not what this block's checksum expects");
                    break;
            }
        }
        return new BlockRepair(null, bad.OffsetBytes, BlockRepairOutcome.Unrecoverable, failures is null
            ? "no other replica is in sync to take a good copy from"
            : $"no in-sync replica has a good copy ({string.Join("; ", failures)})");
    }

    private static string DescribeFailedSnapshotRead(ReplicaStatus status, string snapshot) => status switch
    {
        ReplicaStatus.InvalidArgument => $"it holds no snapshot named {snapshot}",
        ReplicaStatus.NotSupported => "it keeps no snapshots",
        _ => DescribeFailedRead(status),
    };
}

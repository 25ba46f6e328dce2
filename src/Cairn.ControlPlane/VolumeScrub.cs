using System.Diagnostics;
using Cairn.BlockStore;
using Cairn.Core;
using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

/// <summary>What one scrub found and did. <see cref="UnrecoverableCount"/> bad blocks stay bad; the rest were rewritten from a good copy.</summary>
public sealed record ScrubReport(long BlocksChecked, long ErrorCount, long RepairedCount, IReadOnlyList<ScrubErrorInfo> Errors, TimeSpan Elapsed)
{
    public long UnrecoverableCount => ErrorCount - RepairedCount;
}

/// <summary>
/// One scrub of a volume, on the node that owns it. The block store verifies every block of the volume and of its
/// snapshots against its checksum. For a replicated volume the owner then repairs what it can (invariant 4): each bad
/// block of a snapshot is mended in place from the same snapshot on an in-sync replica whose copy is good (every
/// replica holds the owner's snapshots with the same content; a block the volume shares is mended for it too), each
/// other bad block the live volume reads is rewritten from an in-sync replica whose copy is good, and every in-sync
/// replica's live copy is verified on its own node (verify requests: the data stays there) and its bad blocks
/// rewritten from the owner's. The owner does every repair — it alone orders the volume's writes — so a replica's node
/// never scrubs its copy on its own and never takes data from the owner unasked. Last, every in-sync replica's copy of
/// each of the owner's snapshots is verified the same way and its bad blocks mended in place from the owner's copy.
/// Blocks stay bad when no copy is good or when the volume has one copy.
/// </summary>
public sealed class VolumeScrub(ISnapshotPool pool, string volumeId, ReplicatedVolume? replicated, string? node, ILogger logger)
{
    /// <summary>Repairs logged one by one in a scrub; the rest are in its summary and its result.</summary>
    private const int RepairsLogged = 20;

    private readonly List<ScrubErrorInfo> _errors = [];
    private long _errorCount;
    private long _repaired;
    private int _logged;

    /// <summary>Scrubs, repairs and reports. Runs the block store's scrub on the calling thread.</summary>
    public async Task<ScrubReport> RunAsync(IProgress<ScrubProgress>? progress, long bytesPerSecond, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        long replicaBlocks = replicated is null ? 0 : await DataBlocksAsync(replicated, cancellationToken) * replicated.InSyncReplicaCount;
        var local = pool.ScrubVolume(volumeId, Relay<ScrubProgress>(p => progress?.Report(p with { BlocksTotal = p.BlocksTotal + replicaBlocks })),
            bytesPerSecond, cancellationToken);
        _errorCount = local.ErrorCount;
        await RepairLocalAsync(local, cancellationToken);
        long blocksChecked = local.BlocksChecked;
        if (replicated is not null)
        {
            var verified = await replicated.ScrubReplicasAsync(ReplicaBad,
                Relay<long>(n => progress?.Report(new ScrubProgress(local.BlocksChecked + n, local.BlocksChecked + Math.Max(n, replicaBlocks), _errorCount))),
                bytesPerSecond, cancellationToken);
            blocksChecked += verified.BlocksVerified;
            foreach (string unverified in verified.Unverified)
            {
                logger.LogWarning("scrub of volume {Volume}: a replica's copy could not be verified: {Reason}", volumeId, unverified);
            }
            long before = blocksChecked;
            var snapshots = await replicated.ScrubReplicaSnapshotsAsync(ReplicaBad,
                Relay<long>(n => progress?.Report(new ScrubProgress(before + n, before + n, _errorCount))), bytesPerSecond, cancellationToken);
            blocksChecked += snapshots.BlocksVerified;
            foreach (string unverified in snapshots.Unverified)
            {
                logger.LogWarning("scrub of volume {Volume}: a replica's snapshots could not be verified: {Reason}", volumeId, unverified);
            }
        }
        return new ScrubReport(blocksChecked, _errorCount, _repaired, _errors, clock.Elapsed);
    }

    /// <summary>
    /// Mends the snapshots' bad blocks and rewrites the live volume's from replicas, then lists every bad block this node
    /// holds with what became of it. A block the volume shares with a snapshot is mended with the snapshot's; only when
    /// that failed is the volume's view rewritten on its own (redirected to a fresh block), leaving the snapshot's bad.
    /// </summary>
    private async Task RepairLocalAsync(ScrubResult local, CancellationToken cancellationToken)
    {
        var snapshotRepairs = await RepairSnapshotsAsync(local, cancellationToken);
        var sharedMended = local.SnapshotBadBlocks
            .Where(b => b.SharedWithVolume && snapshotRepairs.TryGetValue((Device(b.Snapshot), b.OffsetBytes), out var r) && r.Outcome != BlockRepairOutcome.Unrecoverable)
            .Select(b => b.OffsetBytes).ToHashSet();
        var repairs = new Dictionary<long, BlockRepair>();
        var volumeBad = local.VolumeBadBlocks.Where(b => !(b.SharedWithSnapshot && sharedMended.Contains(b.OffsetBytes))).ToList();
        if (replicated is not null && volumeBad.Count > 0)
        {
            await replicated.RepairLocalAsync(volumeBad.Select(b => b.OffsetBytes), r =>
            {
                repairs[r.OffsetBytes] = r;
                Log(r);
            }, cancellationToken);
        }
        // A shared block counts once, under its snapshot: repaired when the snapshot's copy was mended, whatever became of the volume's view.
        _repaired = local.VolumeBadBlocks.Count(b => !b.SharedWithSnapshot && repairs.TryGetValue(b.OffsetBytes, out var r) && r.Outcome != BlockRepairOutcome.Unrecoverable)
            + snapshotRepairs.Values.Count(r => r.Outcome != BlockRepairOutcome.Unrecoverable);
        var shared = local.SnapshotBadBlocks.Where(b => b.SharedWithVolume).Select(b => (Device(b.Snapshot), b.OffsetBytes)).ToHashSet();
        foreach (var e in local.Errors)
        {
            string repair = replicated is null ? "unrecoverable: the volume has a single copy"
                : string.Equals(e.Device, volumeId, StringComparison.Ordinal) ? repairs.TryGetValue(e.OffsetBytes, out var r) ? Describe(r) : NotReached("live-volume", BlockPool.MaxScrubVolumeBadBlocksListed)
                : !snapshotRepairs.TryGetValue((e.Device, e.OffsetBytes), out var s) ? NotReached("snapshot", BlockPool.MaxScrubSnapshotBadBlocksListed)
                : s.Outcome == BlockRepairOutcome.Unrecoverable && shared.Contains((e.Device, e.OffsetBytes)) && repairs.TryGetValue(e.OffsetBytes, out var v)
                    ? $"{Describe(s)}; the volume's copy: {Describe(v)}"
                    : Describe(s);
            _errors.Add(new ScrubErrorInfo(e.Device, e.OffsetBytes, e.PhysicalBlock, e.Problem, node, repair));
        }
    }

    /// <summary>Mends the snapshots' bad blocks in place from replicas; what became of each, by device (VOLUME@SNAPSHOT) and offset.</summary>
    private async Task<Dictionary<(string Device, long OffsetBytes), BlockRepair>> RepairSnapshotsAsync(ScrubResult local, CancellationToken cancellationToken)
    {
        var repairs = new Dictionary<(string, long), BlockRepair>();
        if (replicated is not null && local.SnapshotBadBlocks.Count > 0)
        {
            await replicated.RepairSnapshotBlocksAsync(local.SnapshotBadBlocks.Select(b => new SnapshotBlock(b.Snapshot, b.OffsetBytes)), r =>
            {
                repairs[(Device(r.Snapshot!), r.OffsetBytes)] = r;
                Log(r);
            }, cancellationToken);
        }
        return repairs;
    }

    /// <summary>A snapshot's device name as the block store's scrub reports it.</summary>
    private string Device(string snapshot) => $"{volumeId}@{snapshot}";

    private static string NotReached(string what, int most) => $"unrecoverable: not repaired by this scrub (it repairs at most {most} {what} blocks); scrub again";

    /// <summary>A replica's bad block, found by a verify and rewritten from this node's copy (or not).</summary>
    private void ReplicaBad(BlockRepair repair)
    {
        _errorCount++;
        if (repair.Outcome != BlockRepairOutcome.Unrecoverable)
        {
            _repaired++;
        }
        if (_errors.Count < BlockPool.MaxScrubErrorsListed)
        {
            _errors.Add(new ScrubErrorInfo(repair.Snapshot is { } snapshot ? Device(snapshot) : volumeId, repair.OffsetBytes, null,
                "fails to read on the replica (checksum mismatch or media error)", repair.Replica, Describe(repair)));
        }
        Log(repair);
    }

    private static string Describe(BlockRepair repair) => repair.Outcome == BlockRepairOutcome.Unrecoverable
        ? $"unrecoverable: {repair.Detail}"
        : $"repaired: {repair.Detail}";

    private void Log(BlockRepair repair)
    {
        if (_logged++ >= RepairsLogged)
        {
            return;
        }
        var level = repair.Outcome == BlockRepairOutcome.Unrecoverable ? LogLevel.Error : LogLevel.Warning;
        if (repair.Snapshot is { } snapshot)
        {
            logger.Log(level, "scrub of volume {Volume}: bad block at byte {Offset} of snapshot {Snapshot} on {Node}: {Repair}", volumeId, repair.OffsetBytes,
                snapshot, repair.Replica ?? node ?? "this node", Describe(repair));
            return;
        }
        logger.Log(level, "scrub of volume {Volume}: bad block at byte {Offset} on {Node}: {Repair}", volumeId, repair.OffsetBytes,
            repair.Replica ?? node ?? "this node", Describe(repair));
    }

    /// <summary>4 KiB blocks the device holds data in: what verifying one replica's copy reads.</summary>
    private static async Task<long> DataBlocksAsync(IBlockDevice device, CancellationToken cancellationToken)
    {
        var extents = new AllocationExtent[64];
        long blocks = 0;
        for (long at = 0; at < device.SizeBytes;)
        {
            int count = await device.GetAllocationAsync(at, device.SizeBytes - at, extents, cancellationToken);
            if (count == 0)
            {
                break;
            }
            foreach (var extent in extents.AsSpan(0, count))
            {
                blocks += extent.State == AllocationState.Data ? (extent.LengthBytes + ReplicatedVolume.RepairBlockBytes - 1) / ReplicatedVolume.RepairBlockBytes : 0;
                at += Math.Max(extent.LengthBytes, 1);
            }
        }
        return blocks;
    }

    /// <summary>Reports on the reporting thread; <see cref="Progress{T}"/> would post to a context that may not exist.</summary>
    private static SynchronousProgress<T> Relay<T>(Action<T> report) => new(report);

    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}

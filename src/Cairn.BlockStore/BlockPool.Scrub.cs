using System.Diagnostics;
using Cairn.BlockStore.Format;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>How far a scrub got: blocks verified so far out of the blocks it will verify.</summary>
public sealed record ScrubProgress(long BlocksChecked, long BlocksTotal, long Errors);

/// <summary>One bad block: where (VOLUME or VOLUME@SNAPSHOT, byte offset, physical block) and what was wrong.</summary>
public sealed record ScrubError(string Device, long OffsetBytes, long PhysicalBlock, string Problem);

/// <summary>
/// A bad block the live volume reads, by its byte offset: what a replicated volume's owner can rewrite from a replica.
/// <paramref name="SharedWithSnapshot"/>: a snapshot holds the same block (the scrub lists it under the snapshot), so
/// rewriting the volume's copy leaves the snapshot's bad.
/// </summary>
public readonly record struct VolumeBadBlock(long OffsetBytes, bool SharedWithSnapshot);

/// <summary>
/// A bad block a snapshot holds, by the snapshot's name and the byte offset: what a replicated volume's owner can
/// mend in place (<see cref="BlockPool.RewriteBlockInPlace"/>) from the same snapshot on a replica. A block several
/// snapshots share is listed once, under the oldest. <paramref name="SharedWithVolume"/>: the live volume reads the
/// same block, so mending it mends the volume too (it is also in <see cref="ScrubResult.VolumeBadBlocks"/>).
/// </summary>
public readonly record struct SnapshotBadBlock(string Snapshot, long OffsetBytes, bool SharedWithVolume);

/// <summary>A finished scrub. <paramref name="Errors"/> lists up to <see cref="BlockPool.MaxScrubErrorsListed"/> bad blocks; <paramref name="ErrorCount"/> counts all.</summary>
public sealed record ScrubResult(string VolumeId, long BlocksChecked, long ErrorCount, IReadOnlyList<ScrubError> Errors, TimeSpan Elapsed)
{
    /// <summary>The bad blocks the live volume reads, in the order found, at most <see cref="BlockPool.MaxScrubVolumeBadBlocksListed"/>.</summary>
    public IReadOnlyList<VolumeBadBlock> VolumeBadBlocks { get; init; } = [];

    /// <summary>The bad blocks of the volume's snapshots, in the order found, at most <see cref="BlockPool.MaxScrubSnapshotBadBlocksListed"/>.</summary>
    public IReadOnlyList<SnapshotBadBlock> SnapshotBadBlocks { get; init; } = [];
}

/// <summary>Scrub: reads every block a volume and its snapshots hold and verifies it against the CRC32C in its map entry.</summary>
public sealed partial class BlockPool
{
    public const int MaxScrubErrorsListed = 100;

    /// <summary>Bad blocks of the live volume a scrub hands on for repair (256 MiB of data); a later scrub finds the rest.</summary>
    public const int MaxScrubVolumeBadBlocksListed = 1 << 16;

    /// <summary>Bad blocks of snapshots a scrub hands on for repair, likewise.</summary>
    public const int MaxScrubSnapshotBadBlocksListed = 1 << 16;

    /// <summary>
    /// Verifies every allocated block of a volume and of its snapshots, each shared block once. <paramref name="bytesPerSecond"/>
    /// above 0 paces the reads so client IO keeps the disk. Bad blocks are also reported like failed reads (<see cref="ChecksumError"/>).
    /// </summary>
    /// <exception cref="KeyNotFoundException">No volume has that id.</exception>
    public ScrubResult ScrubVolume(string volumeId, IProgress<ScrubProgress>? progress = null, long bytesPerSecond = 0, CancellationToken cancellationToken = default)
    {
        ThrowIfUnusable();
        cancellationToken.ThrowIfCancellationRequested();
        var clock = Stopwatch.StartNew();
        var targets = ScrubTargets(volumeId);
        long total = 0;
        foreach (var t in targets)
        {
            Lineage.ForEachDifference(t.Frozen, t.Base, (_, e, before) => total += ExtentMap.IsData(e) && !ExtentMap.SameBlock(e, before) ? 1 : 0);
        }
        var run = new ScrubRun(this, targets[^1].Live!, total, progress, bytesPerSecond, clock, cancellationToken);
        foreach (var t in targets)
        {
            Lineage.ForEachDifference(t.Frozen, t.Base, (lba, e, before) =>
            {
                if (ExtentMap.IsData(e) && !ExtentMap.SameBlock(e, before))
                {
                    run.Verify(t, lba);
                }
            });
        }
        progress?.Report(new ScrubProgress(run.Checked, total, run.ErrorCount));
        return new ScrubResult(volumeId, run.Checked, run.ErrorCount, run.Errors, clock.Elapsed)
        {
            VolumeBadBlocks = run.VolumeBadBlocks,
            SnapshotBadBlocks = run.SnapshotBadBlocks,
        };
    }

    /// <summary>
    /// The volume's snapshots (oldest first) and a fork of its live map, each with the map it shares blocks with
    /// among them (so shared blocks are read once). Reads go through the live map, see <see cref="ScrubRun.Verify"/>.
    /// </summary>
    private List<ScrubTarget> ScrubTargets(string volumeId)
    {
        lock (_volumesLock)
        {
            var volume = VolumeOrThrow(volumeId);
            var mine = volume.Snapshots.ToHashSet();
            var targets = volume.Snapshots.ConvertAll(s => new ScrubTarget($"{volumeId}@{s.Name}", s.Map, s.Parent is { } p && mine.Contains(p) ? p.Map : null, null, s));
            lock (volume.SyncRoot)
            {
                lock (BatchLock)
                {
                    targets.Add(new ScrubTarget(volumeId, volume.Map.Fork(), volume.Parent is { } p && mine.Contains(p) ? p.Map : null, volume, null));
                }
            }
            return targets;
        }
    }

    private sealed record ScrubTarget(string Device, ExtentMap Frozen, ExtentMap? Base, ThinVolume? Live, VolumeSnapshot? Snapshot);

    private sealed class ScrubRun(BlockPool pool, ThinVolume volume, long total, IProgress<ScrubProgress>? progress, long bytesPerSecond, Stopwatch clock,
        CancellationToken cancellationToken)
    {
        private readonly byte[] _block = new byte[PoolFormat.BlockBytes];

        public long Checked { get; private set; }
        public long ErrorCount { get; private set; }
        public List<ScrubError> Errors { get; } = [];
        public List<VolumeBadBlock> VolumeBadBlocks { get; } = [];
        public List<SnapshotBadBlock> SnapshotBadBlocks { get; } = [];

        /// <summary>
        /// Reads the entry and the block inside one read epoch, from the live map for the volume (the fork only says
        /// which blocks to visit): a block the volume overwrote meanwhile may already be reused, and its old CRC would
        /// then report an error that is not there. A snapshot deleted meanwhile is skipped for the same reason.
        /// </summary>
        public void Verify(ScrubTarget target, long lba)
        {
            if ((Checked & 63) == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Pace();
                progress?.Report(new ScrubProgress(Checked, total, ErrorCount));
            }
            int epoch = pool.EnterEpoch();
            try
            {
                if (target.Snapshot is { Deleted: true } || target.Live is { IsDeleted: true })
                {
                    return;
                }
                ulong entry = target.Live is { } live ? live.Map.GetOrHole(lba) : target.Frozen.Get(lba);
                if (ExtentMap.IsData(entry) && !Check(target.Device, lba, entry))
                {
                    bool volumeReads = NoteIfVolumeReads(target, lba, entry);
                    if (target.Snapshot is { } snapshot && SnapshotBadBlocks.Count < MaxScrubSnapshotBadBlocksListed)
                    {
                        SnapshotBadBlocks.Add(new SnapshotBadBlock(snapshot.Name, lba * PoolFormat.BlockBytes, volumeReads));
                    }
                }
            }
            finally
            {
                pool.ExitEpoch(epoch);
            }
            Checked++;
        }

        /// <summary>
        /// A bad block the live volume reads is handed on for repair: the volume's own, or a snapshot's that the volume
        /// still shares (visited once, under the snapshot). Called inside the read epoch, so the entry is current.
        /// Returns whether the live volume reads the block.
        /// </summary>
        private bool NoteIfVolumeReads(ScrubTarget target, long lba, ulong entry)
        {
            bool shared = target.Live is null;
            if (shared && (volume.IsDeleted || !ExtentMap.SameBlock(volume.Map.GetOrHole(lba), entry)))
            {
                return false;
            }
            if (VolumeBadBlocks.Count < MaxScrubVolumeBadBlocksListed)
            {
                VolumeBadBlocks.Add(new VolumeBadBlock(lba * PoolFormat.BlockBytes, shared));
            }
            return true;
        }

        /// <summary>Verifies one block; false (and recorded) when it is bad.</summary>
        private bool Check(string device, long lba, ulong entry)
        {
            uint physical = ExtentMap.PhysicalOf(entry);
            string? problem = null;
            try
            {
                pool.ReadData(physical, _block);
                if (Crc32C.Compute(_block) != ExtentMap.CrcOf(entry))
                {
                    problem = "checksum mismatch";
                    pool.ReportChecksumError(device, lba, physical);
                }
            }
            catch (IOException ex)
            {
                problem = $"read failed: {ex.Message}";
            }
            if (problem is not null)
            {
                ErrorCount++;
                if (Errors.Count < MaxScrubErrorsListed)
                {
                    Errors.Add(new ScrubError(device, lba * PoolFormat.BlockBytes, physical, problem));
                }
            }
            return problem is null;
        }

        /// <summary>Sleeps while ahead of the byte rate, so a background scrub leaves the disk to clients.</summary>
        private void Pace()
        {
            if (bytesPerSecond <= 0)
            {
                return;
            }
            double due = Checked * (double)PoolFormat.BlockBytes / bytesPerSecond;
            double ahead = due - clock.Elapsed.TotalSeconds;
            if (ahead > 0.001)
            {
                cancellationToken.WaitHandle.WaitOne(TimeSpan.FromSeconds(ahead));
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
    }
}

using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;

namespace Cairn.BlockStore;

public sealed partial class BlockPool
{
    /// <summary>
    /// Loads the checkpoint, replays its journal up to the first torn batch (cutting the tail off so new batches
    /// follow valid ones), then derives the allocator from the maps: no free-space state is persisted.
    /// </summary>
    private static BlockPool Recover(IPoolMedium medium, PoolHeader header, PoolOptions options, IStorageFile data)
    {
        long totalBlocks = header.CapacityBytes / PoolFormat.BlockBytes;
        var image = new PoolImage(totalBlocks, medium.Location);
        foreach (var unfinished in (string[])[PoolFormat.CheckpointTempFile, PoolFormat.HeaderTempFile])
        {
            if (medium.Exists(unfinished))
            {
                medium.Delete(unfinished); // a checkpoint or an upgraded header that never became authoritative
            }
        }
        if (medium.Exists(PoolFormat.CheckpointFile))
        {
            using var checkpoint = medium.Open(PoolFormat.CheckpointFile, create: false);
            CheckpointFile.Read(checkpoint, header.PoolId, image, medium.Location);
        }
        var (journal, journalEnd, sequence) = OpenJournal(medium, header, image);
        try
        {
            DeleteStaleJournals(medium, image.Generation);
            var allocator = new BlockAllocator(totalBlocks);
            var pool = new BlockPool(medium, header, options, data, allocator)
            {
                _journal = journal,
                _journalEnd = journalEnd,
                _journalSequence = sequence,
                _generation = image.Generation,
                _nextVolumeIndex = image.NextVolumeIndex,
            };
            pool.Adopt(image, allocator);
            if (image.OldestVersionRead < PoolFormat.Version || header.Version < PoolFormat.Version)
            {
                pool.Upgrade();
            }
            pool.StartCommitter();
            return pool;
        }
        catch
        {
            journal.Dispose();
            throw;
        }
    }

    private static (IStorageFile Journal, long End, ulong Sequence) OpenJournal(IPoolMedium medium, PoolHeader header, PoolImage image)
    {
        string name = PoolFormat.JournalFile(image.Generation);
        bool existed = medium.Exists(name);
        var journal = medium.Open(name, create: true);
        try
        {
            var (end, sequence) = existed ? JournalFile.Replay(journal, image.Generation, header.PoolId, image, medium.Location) : (-1, 0UL);
            if (end < 0)
            {
                // Missing or never-synced journal (crash right after a checkpoint): start it now.
                journal.SetLength(0);
                JournalFile.WriteHeader(journal, image.Generation, header.PoolId);
                journal.Sync();
                medium.SyncDirectory();
                return (journal, JournalFile.HeaderBytes, 0);
            }
            if (end < journal.Length)
            {
                journal.SetLength(end); // drop the torn tail so the next batch follows the last valid one
                journal.Sync();
            }
            return (journal, end, sequence);
        }
        catch
        {
            journal.Dispose();
            throw;
        }
    }

    private static void DeleteStaleJournals(IPoolMedium medium, ulong generation)
    {
        string current = PoolFormat.JournalFile(generation);
        foreach (var f in medium.ListFiles())
        {
            if (f != current && f.StartsWith(PoolFormat.JournalPrefix, StringComparison.Ordinal))
            {
                medium.Delete(f); // older generations are contained in the checkpoint
            }
        }
    }

    /// <summary>Builds volumes, snapshots and their tree from the recovered image, and marks every block some map holds as used.</summary>
    private void Adopt(PoolImage image, BlockAllocator allocator)
    {
        foreach (var v in image.Volumes.Values)
        {
            _volumes.Add(v.Id, new ThinVolume(this, v.Index, v.Id, v.SizeBytes, v.CreatedAt, v.Map, v.Map.CountData()));
        }
        var byIndex = _volumes.Values.ToDictionary(v => v.Index);
        var snapshots = new Dictionary<uint, VolumeSnapshot>();
        foreach (var s in image.Snapshots.Values) // ascending index: parents come first
        {
            byIndex.TryGetValue(s.OwnerIndex!.Value, out var owner); // a hidden snapshot may outlive its volume
            var snapshot = new VolumeSnapshot(s.Index, s.OwnerIndex.Value, owner?.Id ?? "", s.Id, s.SizeBytes, s.CreatedAt, s.Map) { Deleted = s.Hidden };
            snapshots.Add(s.Index, snapshot);
            _snapshots.Add(s.Index, snapshot);
            if (!s.Hidden)
            {
                owner!.Snapshots.Add(snapshot);
            }
            if (s.Parent is { } p)
            {
                snapshot.Parent = snapshots[p.Index];
                snapshot.Parent.ChildSnapshots.Add(snapshot);
            }
            MarkUsedBlocks(allocator, s, image);
        }
        foreach (var v in image.Volumes.Values)
        {
            if (v.Parent is { } p)
            {
                var volume = byIndex[v.Index];
                volume.Parent = snapshots[p.Index];
                volume.Parent.ChildVolumes.Add(volume);
            }
            MarkUsedBlocks(allocator, v, image);
        }
    }

    /// <summary>
    /// Marks the blocks a map holds beyond its parent. Blocks are shared only along the tree, so this marks each block
    /// once; a block marked twice is named by two unrelated maps, which only corruption can cause.
    /// </summary>
    private static void MarkUsedBlocks(BlockAllocator allocator, VolumeImage v, PoolImage image)
    {
        Lineage.ForEachDifference(v.Map, v.Parent?.Map, (b, e, before) =>
        {
            if (ExtentMap.IsData(e) && !ExtentMap.SameBlock(e, before) && !allocator.MarkUsed(ExtentMap.PhysicalOf(e)))
            {
                throw image.Corrupt($"physical block {ExtentMap.PhysicalOf(e)} is referenced twice ('{v.Id}', block {b})");
            }
        });
    }

    /// <summary>Rewrites a pool opened in an older format: the header, then a checkpoint and journal in the current one.</summary>
    private void Upgrade()
    {
        _header.WriteTo(_medium); // Encode always writes the current version
        CheckpointNow();
    }
}

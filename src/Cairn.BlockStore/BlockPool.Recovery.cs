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
        if (medium.Exists(PoolFormat.CheckpointTempFile))
        {
            medium.Delete(PoolFormat.CheckpointTempFile); // a checkpoint that never became authoritative
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
            foreach (var v in image.Volumes.Values)
            {
                long allocated = MarkUsedBlocks(allocator, v, image);
                pool._volumes.Add(v.Id, new ThinVolume(pool, v.Index, v.Id, v.SizeBytes, v.CreatedAt, v.Map, allocated));
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

    private static long MarkUsedBlocks(BlockAllocator allocator, VolumeImage v, PoolImage image)
    {
        long allocated = 0;
        for (long b = 0; b < v.Map.BlockCount; b++)
        {
            if (v.Map.IsPageEmpty(b))
            {
                b |= ExtentMap.PageEntries - 1;
                continue;
            }
            ulong e = v.Map.Get(b);
            if (!ExtentMap.IsData(e))
            {
                continue;
            }
            if (!allocator.MarkUsed(ExtentMap.PhysicalOf(e)))
            {
                throw image.Corrupt($"physical block {ExtentMap.PhysicalOf(e)} is referenced twice (volume '{v.Id}', block {b})");
            }
            allocated++;
        }
        return allocated;
    }
}

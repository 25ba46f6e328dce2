namespace Cairn.BlockStore.Format;

/// <summary>Metadata of one volume as recovered from checkpoint + journal.</summary>
internal sealed class VolumeImage(uint index, string id, long sizeBytes, DateTimeOffset createdAt)
{
    public uint Index { get; } = index;
    public string Id { get; } = id;
    public long SizeBytes { get; set; } = sizeBytes;
    public DateTimeOffset CreatedAt { get; } = createdAt;
    public ExtentMap Map { get; } = new(BlocksFor(sizeBytes));

    public static long BlocksFor(long sizeBytes) => (sizeBytes + PoolFormat.BlockBytes - 1) >> PoolFormat.BlockShift;
}

/// <summary>
/// All pool metadata being rebuilt on open. Journal records are idempotent (they set state, never adjust it)
/// and keyed by volume index, so replaying records a fuzzy checkpoint already contains is harmless.
/// </summary>
internal sealed class PoolImage(long totalBlocks, string location)
{
    public Dictionary<uint, VolumeImage> Volumes { get; } = [];
    public uint NextVolumeIndex { get; set; }
    public ulong Generation { get; set; }

    public void Create(uint index, string id, long sizeBytes, DateTimeOffset createdAt)
    {
        NextVolumeIndex = Math.Max(NextVolumeIndex, index + 1);
        if (!Volumes.ContainsKey(index))
        {
            Volumes[index] = new VolumeImage(index, id, sizeBytes, createdAt);
        }
    }

    public void Delete(uint index) => Volumes.Remove(index);

    public void Grow(uint index, long sizeBytes)
    {
        if (Volumes.TryGetValue(index, out var v) && sizeBytes > v.SizeBytes)
        {
            v.SizeBytes = sizeBytes;
            v.Map.Grow(VolumeImage.BlocksFor(sizeBytes));
        }
    }

    public void Set(uint index, long block, ulong entry)
    {
        if (!Volumes.TryGetValue(index, out var v))
        {
            return; // the volume was deleted later in the same history
        }
        if (block < 0 || block >= v.Map.BlockCount)
        {
            throw Corrupt($"entry for block {block} beyond volume '{v.Id}'");
        }
        if (ExtentMap.IsData(entry) && ExtentMap.PhysicalOf(entry) >= totalBlocks)
        {
            throw Corrupt($"entry names physical block {ExtentMap.PhysicalOf(entry)} beyond the pool's {totalBlocks} blocks");
        }
        v.Map.Set(block, entry);
    }

    public void SetRange(uint index, long block, long count, ulong entry)
    {
        if (!Volumes.TryGetValue(index, out var v))
        {
            return;
        }
        if (block < 0 || count < 0 || block + count > v.Map.BlockCount)
        {
            throw Corrupt($"range {block}+{count} beyond volume '{v.Id}'");
        }
        for (long b = block; b < block + count; b++)
        {
            if (entry == 0 && v.Map.IsPageEmpty(b))
            {
                b |= ExtentMap.PageEntries - 1; // whole page is already holes
                continue;
            }
            v.Map.Set(b, entry);
        }
    }

    public PoolFormatException Corrupt(string detail)
        => new($"pool metadata in '{location}' is corrupt: {detail}. Restore this pool from a replica.");
}

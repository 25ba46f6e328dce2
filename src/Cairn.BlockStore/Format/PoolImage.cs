namespace Cairn.BlockStore.Format;

/// <summary>Metadata of one map as recovered from checkpoint + journal: a volume's live map or a snapshot.</summary>
internal sealed class VolumeImage(uint index, string id, long sizeBytes, DateTimeOffset createdAt, ExtentMap map)
{
    public uint Index { get; } = index;
    /// <summary>The volume id, or the snapshot's name.</summary>
    public string Id { get; } = id;
    public long SizeBytes { get; set; } = sizeBytes;
    public DateTimeOffset CreatedAt { get; } = createdAt;
    public ExtentMap Map { get; set; } = map;
    /// <summary>For a snapshot, the index of the volume it belongs to; null for a volume.</summary>
    public uint? OwnerIndex { get; init; }
    public VolumeImage? Parent { get; set; }
    /// <summary>A deleted snapshot kept in the tree while two or more children hang below it.</summary>
    public bool Hidden { get; set; }

    public bool IsSnapshot => OwnerIndex is not null;

    public static long BlocksFor(long sizeBytes) => (sizeBytes + PoolFormat.BlockBytes - 1) >> PoolFormat.BlockShift;
}

/// <summary>
/// All pool metadata being rebuilt on open. Journal records are idempotent (they set state, never adjust it)
/// and keyed by map index, so replaying a record twice is harmless.
/// </summary>
internal sealed class PoolImage(long totalBlocks, string location)
{
    /// <summary>Live maps of volumes, by index.</summary>
    public Dictionary<uint, VolumeImage> Volumes { get; } = [];
    /// <summary>Snapshots, by index (creation order = ascending index).</summary>
    public SortedDictionary<uint, VolumeImage> Snapshots { get; } = [];
    public uint NextVolumeIndex { get; set; }
    public ulong Generation { get; set; }
    /// <summary>The oldest format version among the files read; below <see cref="PoolFormat.Version"/> the pool is upgraded on open.</summary>
    public ushort OldestVersionRead { get; set; } = PoolFormat.Version;

    public void Create(uint index, string id, long sizeBytes, DateTimeOffset createdAt)
    {
        NextVolumeIndex = Math.Max(NextVolumeIndex, index + 1);
        if (!Volumes.ContainsKey(index))
        {
            Volumes[index] = new VolumeImage(index, id, sizeBytes, createdAt, new ExtentMap(VolumeImage.BlocksFor(sizeBytes)));
        }
    }

    /// <summary>Deletes a volume; its parent lost a child (its snapshots go by their own records, which follow).</summary>
    public void Delete(uint index)
    {
        if (Volumes.Remove(index, out var v))
        {
            Prune(v.Parent);
        }
    }

    public void Grow(uint index, long sizeBytes)
    {
        if (Volumes.TryGetValue(index, out var v) && sizeBytes > v.SizeBytes)
        {
            v.SizeBytes = sizeBytes;
            v.Map.Grow(VolumeImage.BlocksFor(sizeBytes));
        }
    }

    public void CreateSnapshot(uint volume, uint index, string name, DateTimeOffset createdAt)
    {
        NextVolumeIndex = Math.Max(NextVolumeIndex, index + 1);
        if (Snapshots.ContainsKey(index) || !Volumes.TryGetValue(volume, out var v))
        {
            return;
        }
        Snapshots[index] = new VolumeImage(index, name, v.SizeBytes, createdAt, v.Map.Fork()) { OwnerIndex = volume, Parent = v.Parent };
        v.Parent = Snapshots[index];
    }

    /// <summary>Deletes a snapshot: hidden, and out of the tree once at most one child hangs below it (the rule BlockPool.Prune applies).</summary>
    public void DeleteSnapshot(uint index)
    {
        if (Snapshots.TryGetValue(index, out var s) && !s.Hidden)
        {
            s.Hidden = true;
            Prune(s);
        }
    }

    private void Prune(VolumeImage? snapshot)
    {
        while (snapshot is { Hidden: true })
        {
            var children = Snapshots.Values.Concat(Volumes.Values).Where(n => n.Parent == snapshot).ToList();
            if (children.Count > 1)
            {
                return;
            }
            foreach (var child in children)
            {
                child.Parent = snapshot.Parent;
            }
            Snapshots.Remove(snapshot.Index);
            snapshot = snapshot.Parent;
        }
    }

    public void Clone(uint index, uint snapshot, string id, long sizeBytes, DateTimeOffset createdAt)
    {
        NextVolumeIndex = Math.Max(NextVolumeIndex, index + 1);
        if (Volumes.ContainsKey(index))
        {
            return;
        }
        var source = SnapshotFor(snapshot, $"clone '{id}'");
        var map = source.Map.Fork();
        map.Grow(VolumeImage.BlocksFor(sizeBytes));
        Volumes[index] = new VolumeImage(index, id, sizeBytes, createdAt, map) { Parent = source };
    }

    public void Revert(uint volume, uint snapshot)
    {
        if (!Volumes.TryGetValue(volume, out var v))
        {
            return;
        }
        var source = SnapshotFor(snapshot, $"revert of volume '{v.Id}'");
        var map = source.Map.Fork();
        map.Grow(VolumeImage.BlocksFor(v.SizeBytes));
        v.Map = map;
        var oldParent = v.Parent;
        v.Parent = source;
        Prune(oldParent);
    }

    public void Set(uint index, long block, ulong entry)
    {
        if (!Volumes.TryGetValue(index, out var v))
        {
            return; // the volume was deleted later in the same history
        }
        SetEntry(v, block, entry);
    }

    /// <summary>Sets an entry of any map (checkpoint loading fills snapshots too), checking it against the pool's bounds.</summary>
    public void SetEntry(VolumeImage v, long block, ulong entry)
    {
        if (block < 0 || block >= v.Map.BlockCount)
        {
            throw Corrupt($"entry for block {block} beyond '{v.Id}'");
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

    private VolumeImage SnapshotFor(uint index, string what)
        => Snapshots.TryGetValue(index, out var s) ? s : throw Corrupt($"{what} names snapshot {index}, which does not exist");

    public PoolFormatException Corrupt(string detail)
        => new($"pool metadata in '{location}' is corrupt: {detail}. Restore this pool from a replica.");
}

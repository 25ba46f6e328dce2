namespace Cairn.BlockStore;

/// <summary>
/// A read-only, point-in-time map of a volume, node of the pool's lineage tree. A volume's live map hangs below its
/// newest snapshot; that snapshot hangs below the one before; a clone's live map hangs below the snapshot it came from.
/// A physical block is referenced, at one logical block, by a connected set of tree nodes, which is what lets a
/// node decide alone whether a block it drops is the last reference: it is unless its parent or a child has it too.
/// </summary>
/// <remarks>Tree links are guarded by the pool's volumes lock; a live map's parent also by its volume's lock.</remarks>
internal sealed class VolumeSnapshot(uint index, uint ownerIndex, string ownerId, string name, long sizeBytes, DateTimeOffset createdAt, ExtentMap map, long referencedBlocks = -1)
{
    private long _referencedBlocks = referencedBlocks;

    /// <summary>Pool-wide map index (volumes and snapshots share one index space; journal records name it).</summary>
    public uint Index { get; } = index;
    /// <summary>The volume the snapshot was taken of (it may be gone while the snapshot is a hidden node).</summary>
    public uint OwnerIndex { get; } = ownerIndex;
    public string OwnerId { get; } = ownerId;
    public string Name { get; } = name;
    public long SizeBytes { get; } = sizeBytes;
    public DateTimeOffset CreatedAt { get; } = createdAt;
    /// <summary>Never changes once the snapshot exists.</summary>
    public ExtentMap Map { get; } = map;

    public VolumeSnapshot? Parent { get; set; }
    public List<VolumeSnapshot> ChildSnapshots { get; } = [];
    public List<ThinVolume> ChildVolumes { get; } = [];
    /// <summary>Set once the user deleted it: exports fail with Shutdown; it stays in the tree only while two children hang below it.</summary>
    public bool Deleted { get; set; }

    /// <summary>Data blocks the snapshot shows (shared or not); the map never changes, so it is counted at most once.</summary>
    public long ReferencedBlocks
    {
        get
        {
            long n = Volatile.Read(ref _referencedBlocks);
            if (n < 0)
            {
                n = Map.CountData();
                Volatile.Write(ref _referencedBlocks, n);
            }
            return n;
        }
    }

    public void RemoveChild(ThinVolume volume) => ChildVolumes.Remove(volume);
}

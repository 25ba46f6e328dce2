using Cairn.BlockStore.Format;

namespace Cairn.BlockStore;

/// <summary>
/// Snapshots, clones and reverts. Every map is a node of one lineage tree (see <see cref="VolumeSnapshot"/>); a
/// snapshot forks the live map's page directory, so it costs microseconds whatever the volume's size. Each change
/// appends its record and changes the tree under the volumes lock and the batch lock, so a checkpoint captures a tree
/// that matches the journal position exactly, and it is durable when the call returns.
/// </summary>
public sealed partial class BlockPool
{
    private readonly List<Task> _reclaims = [];
    /// <summary>Every snapshot in the tree by index, hidden ones (deleted, still holding two children) included. Guarded by the volumes lock.</summary>
    private readonly SortedDictionary<uint, VolumeSnapshot> _snapshots = [];

    /// <summary>Takes a read-only, point-in-time snapshot of a volume in constant time; clients may keep writing.</summary>
    /// <exception cref="KeyNotFoundException">No volume has that id.</exception>
    /// <exception cref="InvalidOperationException">The volume already has a snapshot of that name.</exception>
    /// <remarks>Crash-consistent: it holds exactly the writes that completed before the call. Durable when this returns.</remarks>
    public SnapshotInfo CreateSnapshot(string volumeId, string name)
    {
        CheckName(name, "snapshot name");
        ThrowIfUnusable();
        VolumeSnapshot snapshot;
        lock (_volumesLock)
        {
            var volume = VolumeOrThrow(volumeId);
            if (volume.Snapshots.Exists(s => s.Name == name))
            {
                throw new InvalidOperationException($"volume '{volumeId}' already has a snapshot named '{name}'");
            }
            lock (volume.SyncRoot)
            {
                lock (BatchLock)
                {
                    var createdAt = _options.Clock();
                    snapshot = new VolumeSnapshot(_nextVolumeIndex++, volume.Index, volume.Id, name, volume.SizeBytes, createdAt, volume.Map.Fork(),
                        volume.AllocatedBytes / PoolFormat.BlockBytes);
                    _batch.AddSnapshot(volume.Index, snapshot.Index, name, createdAt);
                    InsertAbove(volume, snapshot);
                }
                _snapshots.Add(snapshot.Index, snapshot);
            }
        }
        Flush();
        return new SnapshotInfo(volumeId, name, snapshot.CreatedAt, snapshot.SizeBytes, snapshot.ReferencedBlocks * PoolFormat.BlockBytes, 0);
    }

    /// <summary>The volume's snapshots, oldest first, with what each holds and what deleting it would free.</summary>
    public IReadOnlyList<SnapshotInfo> ListSnapshots(string volumeId)
    {
        lock (_volumesLock)
        {
            var volume = VolumeOrThrow(volumeId);
            return volume.Snapshots.ConvertAll(s => new SnapshotInfo(volumeId, s.Name, s.CreatedAt, s.SizeBytes,
                s.ReferencedBlocks * PoolFormat.BlockBytes, CountExclusive(s) * PoolFormat.BlockBytes));
        }
    }

    public bool TryGetSnapshot(string volumeId, string name, out StoredSnapshot? snapshot)
    {
        lock (_volumesLock)
        {
            snapshot = null;
            if (_volumes.TryGetValue(volumeId, out var volume) && volume.Snapshots.Find(s => s.Name == name) is { } s)
            {
                snapshot = new SnapshotVolume(this, s);
            }
            return snapshot is not null;
        }
    }

    /// <summary>
    /// Deletes a snapshot, also one in the middle of a chain or one that clones came from (they keep their blocks).
    /// Durable when this returns; its space comes back in the background (<see cref="WaitForReclaimAsync"/>).
    /// </summary>
    /// <exception cref="KeyNotFoundException">No such volume or snapshot.</exception>
    public void DeleteSnapshot(string volumeId, string name)
    {
        ThrowIfUnusable();
        lock (_volumesLock)
        {
            var volume = VolumeOrThrow(volumeId);
            DeleteSnapshotLocked(volume, SnapshotOrThrow(volume, name));
        }
        Flush();
    }

    /// <summary>A new writable volume showing a snapshot, sharing its blocks; created in constant time.</summary>
    /// <exception cref="KeyNotFoundException">No such volume or snapshot.</exception>
    /// <exception cref="InvalidOperationException">A volume with the new id exists.</exception>
    /// <remarks>Durable when this returns.</remarks>
    public StoredVolume CloneVolume(string newVolumeId, string sourceVolumeId, string snapshotName)
    {
        CheckName(newVolumeId, "volume id");
        ThrowIfUnusable();
        ThinVolume clone;
        lock (_volumesLock)
        {
            var source = SnapshotOrThrow(VolumeOrThrow(sourceVolumeId), snapshotName);
            if (_volumes.ContainsKey(newVolumeId))
            {
                throw new InvalidOperationException($"volume '{newVolumeId}' already exists in pool '{Name}'");
            }
            lock (BatchLock)
            {
                var createdAt = _options.Clock();
                clone = new ThinVolume(this, _nextVolumeIndex++, newVolumeId, source.SizeBytes, createdAt, new ExtentMap(0), 0);
                _batch.AddClone(clone.Index, source.Index, newVolumeId, source.SizeBytes, createdAt);
                clone.AdoptSnapshot(source);
            }
            _volumes.Add(newVolumeId, clone);
        }
        Flush();
        return clone;
    }

    /// <summary>
    /// Makes a volume's content that of one of its snapshots again (its size stays: volumes only grow). Newer snapshots
    /// stay. Callers that export the volume must first make sure no client is connected (their caches would lie).
    /// </summary>
    /// <remarks>Durable when this returns.</remarks>
    public void RevertVolume(string volumeId, string snapshotName)
    {
        ThrowIfUnusable();
        int freed;
        VolumeSnapshot? oldParent;
        lock (_volumesLock)
        {
            var volume = VolumeOrThrow(volumeId);
            var snapshot = SnapshotOrThrow(volume, snapshotName);
            lock (volume.SyncRoot)
            {
                lock (BatchLock)
                {
                    _batch.AddRevert(volume.Index, snapshot.Index);
                    freed = volume.DiscardExclusiveBlocks(_batch);
                    oldParent = volume.Parent;
                    volume.AdoptSnapshot(snapshot);
                }
            }
            Prune(oldParent);
        }
        CountPendingFrees(freed);
        Flush();
    }

    /// <summary>Completes when the space of every snapshot deleted so far is back in the allocator's hands (pending a sync point).</summary>
    internal Task WaitForReclaimAsync()
    {
        lock (_reclaims)
        {
            return Task.WhenAll(_reclaims);
        }
    }

    /// <summary>Called when a volume is deleted: its parent lost a child and may be a hidden node that can go now. Caller holds the volumes lock.</summary>
    private void PruneAfterVolumeDelete(VolumeSnapshot? formerParent) => Prune(formerParent);

    /// <summary>Puts a new snapshot between a live map and its parent. Caller holds the volumes, volume and batch locks.</summary>
    private static void InsertAbove(ThinVolume volume, VolumeSnapshot snapshot)
    {
        var parent = volume.Parent;
        snapshot.Parent = parent;
        if (parent is not null)
        {
            parent.RemoveChild(volume);
            parent.ChildSnapshots.Add(snapshot);
        }
        snapshot.ChildVolumes.Add(volume);
        volume.Parent = snapshot;
        volume.Snapshots.Add(snapshot);
    }

    /// <summary>
    /// Deletes a snapshot for the user (its name is free again, its export fails) and prunes it from the tree. The
    /// record goes first, so a live map that frees a block because its new parent lacks it does so in a batch no older
    /// than the record. Caller holds the volumes lock.
    /// </summary>
    private void DeleteSnapshotLocked(ThinVolume owner, VolumeSnapshot snapshot)
    {
        lock (BatchLock)
        {
            _batch.AddDeleteSnapshot(snapshot.Index);
        }
        owner.Snapshots.Remove(snapshot);
        snapshot.Deleted = true;
        Prune(snapshot);
    }

    /// <summary>
    /// Removes a deleted snapshot from the tree once at most one child hangs below it; until then it stays as a hidden
    /// node. Removing a node with two children would disconnect blocks the children share (a clone and the volume
    /// both showing a block of the snapshot they came from), and only connected sharing lets a node tell alone whether
    /// it holds a block's last reference. Recovery applies the same rule to the same records (<see cref="PoolImage"/>).
    /// Caller holds the volumes lock.
    /// </summary>
    private void Prune(VolumeSnapshot? snapshot)
    {
        while (snapshot is { Deleted: true } && snapshot.ChildSnapshots.Count + snapshot.ChildVolumes.Count <= 1)
        {
            var parent = snapshot.Parent;
            Unlink(snapshot);
            snapshot = parent; // it lost a child: it may be a hidden node that can go now
        }
    }

    /// <summary>
    /// Takes a snapshot out of the tree: its child hangs below its parent. The blocks only it held are found by a
    /// background scan against its neighbours as they are now (a live child is forked). Caller holds the volumes lock.
    /// </summary>
    private void Unlink(VolumeSnapshot snapshot)
    {
        var parent = snapshot.Parent;
        var neighbours = new List<ExtentMap>();
        if (parent is not null)
        {
            neighbours.Add(parent.Map);
            parent.ChildSnapshots.Remove(snapshot);
        }
        foreach (var child in snapshot.ChildSnapshots)
        {
            neighbours.Add(child.Map);
            child.Parent = parent;
            parent?.ChildSnapshots.Add(child);
        }
        foreach (var child in snapshot.ChildVolumes)
        {
            lock (child.SyncRoot)
            {
                lock (BatchLock)
                {
                    neighbours.Add(child.Map.Fork()); // frozen: from now on the child frees what its new parent lacks
                }
                child.Parent = parent;
            }
            parent?.ChildVolumes.Add(child);
        }
        snapshot.ChildSnapshots.Clear();
        snapshot.ChildVolumes.Clear();
        _snapshots.Remove(snapshot.Index);
        StartReclaim(snapshot.Map, neighbours);
    }

    private void StartReclaim(ExtentMap map, List<ExtentMap> neighbours)
    {
        if (!_options.BackgroundReclaim)
        {
            Reclaim(map, neighbours);
            return;
        }
        lock (_reclaims)
        {
            _reclaims.RemoveAll(t => t.IsCompleted);
            _reclaims.Add(Task.Run(() => Reclaim(map, neighbours)));
        }
    }

    /// <summary>Queues the blocks only the deleted map held; they are punched once a sync point makes the delete record durable.</summary>
    private void Reclaim(ExtentMap map, List<ExtentMap> neighbours)
    {
        var frees = new List<uint>();
        Lineage.ForEachExclusive(map, neighbours, (_, entry) => frees.Add(ExtentMap.PhysicalOf(entry)));
        if (frees.Count == 0 || IsClosed)
        {
            return; // a closed pool rebuilds its free space from the maps on the next open
        }
        lock (BatchLock)
        {
            _batch.Discards.AddRange(frees);
        }
        CountPendingFrees(frees.Count);
    }

    /// <summary>Blocks only this snapshot holds (its live neighbours read as they are now). Caller holds the volumes lock.</summary>
    private static long CountExclusive(VolumeSnapshot snapshot)
    {
        var neighbours = new List<ExtentMap>();
        if (snapshot.Parent is { } parent)
        {
            neighbours.Add(parent.Map);
        }
        neighbours.AddRange(snapshot.ChildSnapshots.Select(c => c.Map));
        neighbours.AddRange(snapshot.ChildVolumes.Select(c => c.Map));
        long count = 0;
        Lineage.ForEachExclusive(snapshot.Map, neighbours, (_, _) => count++);
        return count;
    }

    /// <summary>
    /// Checks the allocator against the maps without trusting the tree: the blocks all maps name (a plain set union)
    /// must be exactly the blocks in use and not waiting to be freed. Tests call it between operations.
    /// </summary>
    internal (long Referenced, long Used) AuditSpace()
    {
        lock (_volumesLock)
        {
            var referenced = new HashSet<uint>();
            foreach (var map in _volumes.Values.Select(v => v.Map).Concat(_snapshots.Values.Select(s => s.Map)))
            {
                for (long b = 0; b < map.BlockCount; b++)
                {
                    if (ExtentMap.IsData(map.Get(b)))
                    {
                        referenced.Add(ExtentMap.PhysicalOf(map.Get(b)));
                    }
                }
            }
            return (referenced.Count, UsedBytes / PoolFormat.BlockBytes);
        }
    }

    /// <summary>Every map for a checkpoint, parents first; live maps are forked. Caller holds the volumes lock and the batch lock.</summary>
    private List<CheckpointNode> CaptureMaps()
    {
        var nodes = _snapshots.Values.Select(s => new CheckpointNode(s.Deleted ? CheckpointNodeKind.HiddenSnapshot : CheckpointNodeKind.Snapshot,
            s.Index, s.OwnerIndex, s.Parent?.Index, s.SizeBytes, s.CreatedAt, s.Name, s.Map, s.Parent?.Map)).ToList();
        foreach (var v in _volumes.Values.OrderBy(v => v.Index))
        {
            nodes.Add(new CheckpointNode(CheckpointNodeKind.Volume, v.Index, v.Index, v.Parent?.Index, v.SizeBytes, v.CreatedAt, v.Id, v.Map.Fork(), v.Parent?.Map));
        }
        return nodes;
    }

    private ThinVolume VolumeOrThrow(string volumeId)
        => _volumes.TryGetValue(volumeId, out var v) ? v : throw new KeyNotFoundException($"volume '{volumeId}' does not exist in pool '{Name}'");

    private static VolumeSnapshot SnapshotOrThrow(ThinVolume volume, string name)
        => volume.Snapshots.Find(s => s.Name == name) ?? throw new KeyNotFoundException($"volume '{volume.Id}' has no snapshot named '{name}'");

    private static void CheckName(string name, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (PoolFormat.StrictUtf8.GetByteCount(name) > PoolHeader.MaxNameBytes)
        {
            throw new ArgumentException($"{what} is longer than {PoolHeader.MaxNameBytes} UTF-8 bytes", nameof(name));
        }
    }
}

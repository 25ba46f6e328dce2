using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>
/// A pool: one directory on a node's drive holding the replicas (stored volumes) placed there.
/// All volumes share one sparse data file of 4 KiB blocks (redirect-on-write), one metadata journal and one checkpoint;
/// see FORMAT.md for the layout and the crash-safety argument.
/// </summary>
/// <remarks>Every public member is thread-safe.</remarks>
public sealed partial class BlockPool : IDisposable
{
    /// <summary>Largest volume: keeps the map's page directory small (64 TiB → 32 MiB of page pointers).</summary>
    public const long MaxVolumeBytes = 64L << 40;
    /// <summary>Largest pool: physical block numbers are 32-bit in the map.</summary>
    public const long MaxCapacityBytes = ((long)ExtentMap.MaxPhysicalBlock + 1) * PoolFormat.BlockBytes;

    private readonly IPoolMedium _medium;
    private readonly PoolHeader _header;
    private readonly PoolOptions _options;
    private readonly IStorageFile _data;
    private readonly BlockAllocator _allocator;
    private readonly Lock _volumesLock = new();
    private readonly Dictionary<string, ThinVolume> _volumes = new(StringComparer.Ordinal);
    private uint _nextVolumeIndex;
    private int _closed;
    private long _checksumErrors;

    private BlockPool(IPoolMedium medium, PoolHeader header, PoolOptions options, IStorageFile data, BlockAllocator allocator)
    {
        _medium = medium;
        _header = header;
        _options = options;
        _data = data;
        _allocator = allocator;
    }

    /// <summary>Creates a new pool in an empty or missing directory. <paramref name="capacityBytes"/> null = the filesystem's free space.</summary>
    public static BlockPool Create(string directory, string name, long? capacityBytes = null)
    {
        System.IO.Directory.CreateDirectory(directory);
        return Create(new FileMedium(directory), name, capacityBytes, PoolOptions.Default);
    }

    /// <summary>Opens an existing pool, checking its format version and recovering after a crash.</summary>
    /// <exception cref="PoolFormatException">Not a pool, corrupt metadata, or a format newer than this build reads.</exception>
    public static BlockPool Open(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"pool directory '{directory}' does not exist");
        }
        return Open(new FileMedium(directory), PoolOptions.Default);
    }

    public string Name => _header.Name;
    public string Directory => _medium.Location;
    public long CapacityBytes => _header.CapacityBytes;
    /// <summary>Bytes of data blocks that volumes reference (metadata files are not counted).</summary>
    public long UsedBytes => Math.Max(0, _allocator.UsedBlocks - Volatile.Read(ref _pendingFreeBlocks)) * PoolFormat.BlockBytes;
    public long FreeBytes => CapacityBytes - UsedBytes;
    public DateTimeOffset CreatedAt => _header.CreatedAt;
    /// <summary>Checksum failures seen on reads in any volume since the pool was opened.</summary>
    public long ChecksumErrors => Interlocked.Read(ref _checksumErrors);

    /// <summary>A block failed checksum verification (the read also failed with <see cref="BlockError.Io"/>).</summary>
    public event EventHandler<ChecksumErrorEventArgs>? ChecksumError;

    internal bool IsClosed => Volatile.Read(ref _closed) != 0;

    public IReadOnlyList<StoredVolumeInfo> ListVolumes()
    {
        var list = new List<StoredVolumeInfo>();
        lock (_volumesLock)
        {
            foreach (var v in _volumes.Values)
            {
                list.Add(new StoredVolumeInfo(v.Id, v.SizeBytes, v.AllocatedBytes, v.CreatedAt));
            }
        }
        list.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return list;
    }

    /// <summary>Creates a thin volume; costs no space until written. Throws <see cref="InvalidOperationException"/> when the id exists.</summary>
    /// <remarks>Durable when this returns.</remarks>
    public StoredVolume CreateVolume(string volumeId, long sizeBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(volumeId);
        if (PoolFormat.StrictUtf8.GetByteCount(volumeId) > PoolHeader.MaxNameBytes)
        {
            throw new ArgumentException($"volume id is longer than {PoolHeader.MaxNameBytes} UTF-8 bytes", nameof(volumeId));
        }
        if (sizeBytes <= 0 || sizeBytes > MaxVolumeBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), sizeBytes, $"volume size must be between 1 byte and {MaxVolumeBytes} bytes");
        }
        ThrowIfUnusable();
        ThinVolume volume;
        lock (_volumesLock)
        {
            if (_volumes.ContainsKey(volumeId))
            {
                throw new InvalidOperationException($"volume '{volumeId}' already exists in pool '{Name}'");
            }
            var createdAt = _options.Clock();
            volume = new ThinVolume(this, _nextVolumeIndex++, volumeId, sizeBytes, createdAt, new ExtentMap(VolumeImage.BlocksFor(sizeBytes)), 0);
            lock (BatchLock)
            {
                _batch.AddCreate(volume.Index, volumeId, sizeBytes, createdAt);
            }
            _volumes.Add(volumeId, volume);
        }
        Flush();
        return volume;
    }

    public bool TryGetVolume(string volumeId, out StoredVolume? volume)
    {
        lock (_volumesLock)
        {
            bool found = _volumes.TryGetValue(volumeId, out var v);
            volume = v;
            return found;
        }
    }

    /// <summary>
    /// Deletes a volume with its snapshots and frees their space (blocks that clones of its snapshots show stay theirs).
    /// Open IO on it fails with <see cref="BlockError.Shutdown"/>.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No volume has that id.</exception>
    /// <remarks>Durable when this returns.</remarks>
    public void DeleteVolume(string volumeId)
    {
        ThrowIfUnusable();
        lock (_volumesLock)
        {
            if (!_volumes.Remove(volumeId, out var volume))
            {
                throw new KeyNotFoundException($"volume '{volumeId}' does not exist in pool '{Name}'");
            }
            var parent = volume.Parent;
            volume.MarkDeleted();
            PruneAfterVolumeDelete(parent);
            for (int i = volume.Snapshots.Count - 1; i >= 0; i--)
            {
                DeleteSnapshotLocked(volume, volume.Snapshots[i]);
            }
        }
        Flush();
    }

    /// <summary>Makes everything written so far durable and closes the pool; IO on its volumes then fails with <see cref="BlockError.Shutdown"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }
        StopCommitter();
        WaitForReclaimAsync().Wait(); // short scans; they stop adding frees once the pool is closed
        try
        {
            lock (_commitLock)
            {
                SyncPointLocked(Volatile.Read(ref _openSequence));
                if (_journalEnd > 1 << 20)
                {
                    Checkpoint(); // a short journal makes the next open fast
                }
            }
        }
        catch (Exception ex) when (ex is IOException or BlockDeviceException)
        {
            // Nothing more to save; unflushed writes were never promised.
        }
        WaitForReaders();
        _journal.Dispose();
        _data.Dispose();
    }

    internal static BlockPool Create(IPoolMedium medium, string name, long? capacityBytes, PoolOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (PoolFormat.StrictUtf8.GetByteCount(name) > PoolHeader.MaxNameBytes)
        {
            throw new ArgumentException($"pool name is longer than {PoolHeader.MaxNameBytes} UTF-8 bytes", nameof(name));
        }
        long capacity = capacityBytes ?? medium.AvailableBytes;
        if (capacity < PoolFormat.BlockBytes || capacity > MaxCapacityBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(capacityBytes), capacity,
                $"pool capacity must be between {PoolFormat.BlockBytes} bytes and {MaxCapacityBytes} bytes");
        }
        PrepareEmptyDirectory(medium);
        var header = new PoolHeader(name, capacity - capacity % PoolFormat.BlockBytes, options.Clock(), options.NewPoolId());
        using (var data = medium.Open(PoolFormat.DataFile, create: true))
        {
            data.Sync();
        }
        using (var journal = medium.Open(PoolFormat.JournalFile(0), create: true))
        {
            JournalFile.WriteHeader(journal, 0, header.PoolId);
            journal.Sync();
        }
        header.WriteTo(medium); // last, renamed into place: a pool without it is an unfinished creation
        return Open(medium, options);
    }

    private static void PrepareEmptyDirectory(IPoolMedium medium)
    {
        if (medium.Exists(PoolFormat.HeaderFile))
        {
            throw new InvalidOperationException($"'{medium.Location}' already holds a Cairn pool; open it instead");
        }
        var files = medium.ListFiles();
        foreach (var f in files)
        {
            bool ours = f is PoolFormat.DataFile or PoolFormat.HeaderTempFile
                || (f.StartsWith(PoolFormat.JournalPrefix, StringComparison.Ordinal) && f.EndsWith(PoolFormat.JournalSuffix, StringComparison.Ordinal));
            if (!ours)
            {
                throw new InvalidOperationException($"cannot create a pool in '{medium.Location}': the directory is not empty ({f})");
            }
        }
        foreach (var f in files)
        {
            medium.Delete(f); // leftovers of a creation that crashed before its header was in place
        }
    }

    internal static BlockPool Open(IPoolMedium medium, PoolOptions options)
    {
        var header = PoolHeader.Read(medium);
        if (!medium.Exists(PoolFormat.DataFile))
        {
            throw new PoolFormatException($"pool '{medium.Location}' has no {PoolFormat.DataFile}; the pool is incomplete or damaged.");
        }
        IStorageFile data;
        try
        {
            data = medium.Open(PoolFormat.DataFile, create: false, exclusive: true);
        }
        catch (IOException ex) when (ex is not FileNotFoundException)
        {
            throw new IOException($"pool '{medium.Location}' is in use by another process: {ex.Message}", ex);
        }
        try
        {
            return Recover(medium, header, options, data);
        }
        catch
        {
            data.Dispose();
            throw;
        }
    }

    /// <param name="device">The volume's id, or VOLUME@SNAPSHOT.</param>
    internal void ReportChecksumError(string device, long block, uint physicalBlock)
    {
        Interlocked.Increment(ref _checksumErrors);
        ChecksumError?.Invoke(this, new ChecksumErrorEventArgs(device, block * PoolFormat.BlockBytes, physicalBlock));
    }

    internal void ThrowIfUnusable()
    {
        if (IsClosed)
        {
            ThrowHelper.Throw(BlockError.Shutdown, $"pool '{Name}' is closed");
        }
        if (_fault is not null)
        {
            ThrowHelper.Throw(BlockError.Io, $"pool '{Name}' failed to sync metadata earlier ({_fault.Message}); reopen it to recover");
        }
    }
}

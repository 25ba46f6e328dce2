using Cairn.BlockStore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

/// <summary>A pool the daemon was told to serve: a directory and, for a new pool, an optional capacity.</summary>
public sealed record PoolConfig(string Directory, long? CapacityBytes = null)
{
    /// <summary>A pool is named after its directory, e.g. /data/pools/fast → "fast".</summary>
    public string Name => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(Directory)));
}

/// <summary>The pools open on this node; picks where a new volume goes.</summary>
public sealed class PoolManager : IDisposable
{
    private readonly IReadOnlyList<IVolumePool> _pools;

    public PoolManager(IEnumerable<IVolumePool> pools)
    {
        _pools = [.. pools];
        var duplicate = _pools.GroupBy(p => p.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument,
                $"two pools are named '{duplicate.Key}'; pools are named after their directory, so give each a distinct directory name", "pool");
        }
    }

    public IReadOnlyList<IVolumePool> Pools => _pools;

    /// <summary>Opens each configured pool, creating it when its directory is missing or empty.</summary>
    public static PoolManager OpenOrCreate(IEnumerable<PoolConfig> configs, ILogger? logger = null)
    {
        logger ??= NullLogger.Instance;
        var opened = new List<IVolumePool>();
        try
        {
            foreach (var config in configs)
            {
                opened.Add(new LocalVolumePool(OpenOrCreate(config, logger)));
            }
            return new PoolManager(opened);
        }
        catch
        {
            foreach (var pool in opened)
            {
                pool.Dispose();
            }
            throw;
        }
    }

    private static BlockPool OpenOrCreate(PoolConfig config, ILogger logger)
    {
        string directory = Path.GetFullPath(config.Directory);
        bool exists = System.IO.Directory.Exists(directory) && System.IO.Directory.EnumerateFileSystemEntries(directory).Any();
        if (exists)
        {
            var pool = BlockPool.Open(directory);
            logger.LogInformation("opened pool {Pool} at {Directory}", pool.Name, directory);
            return pool;
        }
        var created = BlockPool.Create(directory, config.Name, config.CapacityBytes);
        logger.LogInformation("created pool {Pool} at {Directory} with capacity {CapacityBytes} bytes", created.Name, directory, created.CapacityBytes);
        return created;
    }

    public IVolumePool? Find(string name) => _pools.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.Ordinal));

    /// <summary>The pool with the most free space: thin volumes grow into it, so free space is what matters.</summary>
    public IVolumePool PickForNewVolume() =>
        _pools.MaxBy(p => p.FreeBytes)
        ?? throw new CairnException(CairnErrorCode.Unavailable, "no pool is configured on this node; start cairnd with --pool PATH");

    public IReadOnlyList<PoolInfo> Describe() =>
        [.. _pools.Select(p => new PoolInfo(p.Name, p.Directory, p.CapacityBytes, p.UsedBytes, p.FreeBytes, p.ListVolumes().Count, p.Fault))];

    public void Dispose()
    {
        foreach (var pool in _pools)
        {
            pool.Dispose();
        }
    }
}

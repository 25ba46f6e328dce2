using Microsoft.Extensions.Logging;

namespace Cairn.ClusterStore;

public sealed class EmbeddedClusterStoreOptions
{
    /// <summary>When the log grows past this, the store rewrites a snapshot and starts an empty log.</summary>
    public long CompactLogBytes { get; init; } = 4 << 20;

    /// <summary>Events kept for watches that resume from an older revision; older ones are compacted away.</summary>
    public int WatchHistoryEvents { get; init; } = 10_000;

    /// <summary>How often expired leases are swept.</summary>
    public TimeSpan LeaseSweepInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    public ILogger? Logger { get; init; }
}

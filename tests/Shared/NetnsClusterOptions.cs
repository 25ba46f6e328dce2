namespace Cairn.Testing;

/// <summary>What a <see cref="NetnsCluster"/> starts.</summary>
public sealed record NetnsClusterOptions
{
    /// <summary>The cairnd executable (the apphost next to Cairn.Daemon.dll).</summary>
    public required string DaemonPath { get; init; }

    public int Nodes { get; init; } = 3;

    /// <summary>cairnd --lease-ttl: short, so a lost node shows Down quickly.</summary>
    public double LeaseTtlSeconds { get; init; } = 2;

    /// <summary>Each node's pool capacity (--pool PATH:SIZE), e.g. "512MiB", so a pool can be filled cheaply; null = the filesystem's free space.</summary>
    public string? PoolCapacity { get; init; }

    /// <summary>1-based index of the node whose pool lives on a <see cref="FaultyDrive"/> (IO errors on demand); 0 = none.</summary>
    public int FaultyDriveNode { get; init; }

    /// <summary>Size of the faulty drive's filesystem.</summary>
    public long FaultyDriveBytes { get; init; } = 1L << 30;

    /// <summary>Progress lines (test output); null = silent.</summary>
    public Action<string>? Log { get; init; }
}

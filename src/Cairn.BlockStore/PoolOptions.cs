namespace Cairn.BlockStore;

/// <summary>Tuning and determinism hooks; tests shrink thresholds and pin the clock and pool id.</summary>
internal sealed class PoolOptions
{
    public static readonly PoolOptions Default = new();

    /// <summary>When the journal passes this size, a sync point also writes a checkpoint and starts a fresh journal.</summary>
    public long CheckpointJournalBytes { get; init; } = 64L << 20;

    /// <summary>Un-synced records are bounded: a writer that grows the open batch past this forces a sync point.</summary>
    public int MaxBatchBytes { get; init; } = 64 << 20;

    /// <summary>
    /// Runs of at least this many blocks that the user gave back (TRIM, WRITE_ZEROES without NoHole, volume delete) are
    /// punched out of the data file so the filesystem gets the space back. Blocks freed by overwrites are never punched.
    /// </summary>
    public int PunchHoleMinBlocks { get; init; } = 16;

    /// <summary>
    /// Background commit: when there is un-synced work, a sync point runs on a background thread at least this often
    /// (like a filesystem's commit interval). It makes overwrite-freed blocks reusable without client flushes and bounds
    /// how much acknowledged but unflushed data a crash can lose. Null disables it (deterministic tests).
    /// </summary>
    public TimeSpan? CommitInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The background commit also runs as soon as this many bytes of freed blocks wait for a sync point (capped at 1/8 of
    /// the pool's capacity), so a flush-free overwrite stream reuses recently written, still cached blocks. Until then
    /// overwrites extend the data file into new page-cache pages (10-30x a cached page's cost on a VM whose freed memory
    /// goes back to the host), yet 64 MiB, which halved that growth, cost 4 KiB random writes 15-20% in extra sync points.
    /// </summary>
    public long CommitPendingFreeBytes { get; init; } = 256L << 20;

    /// <summary>
    /// Snapshot deletes find the space to give back on a thread-pool task (true), or before the delete returns (false:
    /// deterministic tests, whose block placement must not depend on thread timing).
    /// </summary>
    public bool BackgroundReclaim { get; init; } = true;

    public Func<DateTimeOffset> Clock { get; init; } = () => DateTimeOffset.UtcNow;

    public Func<Guid> NewPoolId { get; init; } = Guid.NewGuid;
}

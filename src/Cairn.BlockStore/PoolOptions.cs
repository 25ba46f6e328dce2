namespace Cairn.BlockStore;

/// <summary>Tuning and determinism hooks; tests shrink thresholds and pin the clock and pool id.</summary>
internal sealed class PoolOptions
{
    public static readonly PoolOptions Default = new();

    /// <summary>When the journal passes this size, a sync point also writes a checkpoint and starts a fresh journal.</summary>
    public long CheckpointJournalBytes { get; init; } = 64L << 20;

    /// <summary>Un-synced records are bounded: a writer that grows the open batch past this forces a sync point.</summary>
    public int MaxBatchBytes { get; init; } = 64 << 20;

    /// <summary>Freed runs at least this long are punched out of the data file so the filesystem gets the space back.</summary>
    public int PunchHoleMinBlocks { get; init; } = 16;

    public Func<DateTimeOffset> Clock { get; init; } = () => DateTimeOffset.UtcNow;

    public Func<Guid> NewPoolId { get; init; } = Guid.NewGuid;
}

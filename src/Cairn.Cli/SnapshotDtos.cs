namespace Cairn.Cli;

internal sealed record SnapshotDto(
    string Volume,
    string Name,
    DateTimeOffset CreatedAt,
    long SizeBytes,
    string Size,
    long ReferencedBytes,
    long ExclusiveBytes,
    string Exclusive,
    long SharedBytes,
    string Shared,
    string? Export,
    IReadOnlyList<ClientDto>? Clients);

internal sealed record SnapshotListDto(IReadOnlyList<SnapshotDto> Snapshots);

internal sealed record CreateSnapshotDto(string Name);

internal sealed record SourceDto(string Volume, string Snapshot);

internal sealed record CloneVolumeDto(string Name, string? Size, SourceDto Source);

internal sealed record RevertVolumeDto(string Snapshot, bool Force);

internal sealed record StartScrubDto(string? Rate);

internal sealed record ScrubErrorDto(string Device, long OffsetBytes, long? PhysicalBlock, string Problem, string? Node = null, string? Repair = null);

/// <param name="UnrecoverableCount">Null from a cairnd that does not repair: then every bad block stays bad.</param>
internal sealed record ScrubDto(string Volume, string State, long BlocksChecked, long BlocksTotal, long ErrorCount,
    IReadOnlyList<ScrubErrorDto>? Errors, DateTimeOffset StartedAt, DateTimeOffset? FinishedAt, string? Failure, long RepairedCount = 0,
    long? UnrecoverableCount = null)
{
    public long StillBad => UnrecoverableCount ?? ErrorCount;
}

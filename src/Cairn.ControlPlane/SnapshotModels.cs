namespace Cairn.ControlPlane;

/// <summary>The snapshot a clone was made from; kept in the clone's spec so an interrupted clone can be finished after a crash.</summary>
public sealed record VolumeSource(string Volume, string Snapshot, string VolumeId);

/// <summary>What the control plane reports about a snapshot.</summary>
/// <param name="ExclusiveBytes">What deleting the snapshot gives back.</param>
/// <param name="ExportAddress">Read-only NBD export (export name VOLUME@SNAPSHOT); null while no frontend listens.</param>
public sealed record SnapshotDetails(
    string Volume,
    string Name,
    DateTimeOffset CreatedAt,
    long SizeBytes,
    long ReferencedBytes,
    long ExclusiveBytes,
    long SharedBytes,
    string? ExportAddress,
    IReadOnlyList<ClientInfo> Clients);

/// <summary>A volume's scrub: running (progress so far) or finished (result), as the API shows it.</summary>
public sealed record ScrubStatus(string Volume, string State, long BlocksChecked, long BlocksTotal, long ErrorCount,
    IReadOnlyList<ScrubErrorInfo> Errors, DateTimeOffset StartedAt, DateTimeOffset? FinishedAt, string? Failure);

public sealed record ScrubErrorInfo(string Device, long OffsetBytes, long PhysicalBlock, string Problem);

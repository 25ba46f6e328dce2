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
/// <param name="ErrorCount">Bad blocks found, on this node and (replicated volumes) on the in-sync replicas.</param>
/// <param name="RepairedCount">Bad blocks rewritten from a good copy: they read correctly now.</param>
/// <param name="UnrecoverableCount">Bad blocks left as they were (no good copy, a snapshot's block, a volume with one copy).</param>
public sealed record ScrubStatus(string Volume, string State, long BlocksChecked, long BlocksTotal, long ErrorCount,
    IReadOnlyList<ScrubErrorInfo> Errors, DateTimeOffset StartedAt, DateTimeOffset? FinishedAt, string? Failure, long RepairedCount = 0,
    long UnrecoverableCount = 0);

/// <summary>One bad block: which copy (<paramref name="Device"/> VOLUME or VOLUME@SNAPSHOT, on <paramref name="Node"/>), where, what was
/// wrong and what the scrub did about it.</summary>
/// <param name="PhysicalBlock">Where it lies in its pool; null for a replica's block, which only its node knows.</param>
/// <param name="Repair">"repaired: ..." or "unrecoverable: ..." with the reason.</param>
public sealed record ScrubErrorInfo(string Device, long OffsetBytes, long? PhysicalBlock, string Problem, string? Node = null, string? Repair = null);

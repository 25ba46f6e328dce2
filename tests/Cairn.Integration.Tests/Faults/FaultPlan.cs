namespace Cairn.Integration.Tests.Faults;

/// <summary>The faults a run injects while a volume is being written.</summary>
internal enum FaultKind
{
    // Need synchronous replication (a volume with 3 replicas, failover, rebuild):
    KillReplica,          // kill -9 a node holding a replica that is not the owner; restart it later
    KillOwner,            // kill -9 the owner mid-write; a new owner must serve every acknowledged block
    IsolateOwner,         // cut every link of the owner, etcd and clients included
    CutOwnerFromCluster,  // cut owner ↔ etcd and owner ↔ replicas; the client still reaches it: it must stop acknowledging
    CutOwnerFromEtcd,     // cut owner ↔ etcd only: it can no longer prove its epoch and must stop acknowledging
    ReplicaDriveErrors,   // IO errors on one replica's drive
    ReplicaPoolFull,      // one replica's pool runs out of space

    // Work with one replica today:
    KillBystander,        // kill -9 a node that does not hold the volume, restart it
    IsolateBystander,     // cut every link of a node that does not hold the volume, heal it
    CutOwnerFromEtcdThenHeal, // the owner loses etcd (goes Down) and gets it back; data written before stays readable
}

/// <summary>
/// Everything random about one fault run, drawn from its seed, so CAIRN_FAULT_SEED=N replays it exactly (same fault,
/// sizes, fio parameters and moment of the fault; only the machine's timing differs). The fault is the seed modulo
/// the number of kinds, so any run of consecutive seeds at least that long covers every kind.
/// </summary>
/// <param name="PinnedNode">1-based node the volume is created on (its owner), or 0 to let placement choose.</param>
/// <param name="Bystander">1-based node the fault hits when it hits a node other than the owner: a node that does not
/// hold the volume (one replica), or a replica that is not the owner (three replicas; another node if it is the owner).</param>
internal sealed record FaultPlan(int Seed, FaultKind Fault, int Replicas, long VolumeBytes, int BlockBytes, int IoDepth,
    double FaultAtFraction, int PinnedNode, int Bystander)
{
    public static readonly FaultKind[] Replicated =
        [FaultKind.KillReplica, FaultKind.KillOwner, FaultKind.IsolateOwner, FaultKind.CutOwnerFromCluster, FaultKind.CutOwnerFromEtcd, FaultKind.ReplicaDriveErrors, FaultKind.ReplicaPoolFull];

    public static readonly FaultKind[] SingleReplica =
        [FaultKind.KillBystander, FaultKind.IsolateBystander, FaultKind.CutOwnerFromEtcdThenHeal];

    /// <summary>Faults on a replica that is not the owner: the volume must carry on, degraded, without the client seeing an error.</summary>
    public static readonly FaultKind[] ReplicaOutages = [FaultKind.KillReplica, FaultKind.ReplicaDriveErrors, FaultKind.ReplicaPoolFull];

    public string VolumeName => $"fr{Seed}";

    /// <summary>
    /// Draws a plan: single-replica plans pin the volume to a node; replicated plans let placement choose the owner,
    /// except that drive errors must hit a replica, not the owner, so the owner is then pinned away from the faulty drive.
    /// </summary>
    public static FaultPlan ForSeed(int seed, bool replicated, int nodes, int faultyDriveNode)
    {
        var faults = replicated ? Replicated : SingleReplica;
        var fault = faults[seed % faults.Length];
        // System.Random's first draws for neighbouring seeds are correlated; scramble the seed so consecutive runs differ.
        var random = new Random(unchecked((int)(((ulong)seed * 0x9E3779B97F4A7C15UL) >> 33)));
        int pinned = random.Next(1, nodes + 1);
        int bystander = (pinned - 1 + random.Next(1, nodes)) % nodes; // zero-based, never the pinned node
        if (fault == FaultKind.ReplicaDriveErrors && pinned == faultyDriveNode)
        {
            pinned = bystander + 1; // the other draw is never the same node
        }
        return new FaultPlan(
            Seed: seed,
            Fault: fault,
            Replicas: replicated ? 3 : 1,
            VolumeBytes: (16L + 8 * random.Next(0, 3)) << 20,   // 16, 24 or 32 MiB: written in a few seconds
            BlockBytes: 4096 << random.Next(0, 3),              // 4, 8 or 16 KiB
            IoDepth: 1 << random.Next(0, 4),                    // 1 to 8
            FaultAtFraction: 0.1 + 0.6 * random.NextDouble(),   // the fault lands after 10-70 % of the writes were acknowledged
            PinnedNode: !replicated || fault == FaultKind.ReplicaDriveErrors ? pinned : 0,
            Bystander: bystander + 1);
    }

    /// <summary>Writes per second for fio and the ledger writer: every block once in about four seconds, so the fault lands among them.</summary>
    public long WritesPerSecond => Math.Max(250, VolumeBytes / BlockBytes / 4);

    public override string ToString() =>
        $"seed={Seed} fault={Fault} replicas={Replicas} volume={VolumeName} size={VolumeBytes >> 20}MiB bs={BlockBytes} iodepth={IoDepth} " +
        $"faultAt={FaultAtFraction:P0}{(PinnedNode > 0 ? $" node=n{PinnedNode}" : "")} bystander=n{Bystander}";
}

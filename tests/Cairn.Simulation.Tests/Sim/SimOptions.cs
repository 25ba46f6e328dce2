namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// Everything a run depends on besides the seed. <see cref="FromSeed"/> draws a fault profile from the seed itself, so
/// each seed explores a different mix (a quiet network, a lossy one, many crashes, long partitions).
/// All times are simulated microseconds.
/// </summary>
internal sealed record SimOptions
{
    public int Replicas { get; init; } = 3;

    public int Blocks { get; init; } = 16;

    public int Writers { get; init; } = 2;

    public int Readers { get; init; } = 2;

    /// <summary>Clients issue operations until then; then every fault heals and the final audit runs.</summary>
    public long WorkloadUs { get; init; } = 500_000;

    /// <summary>After healing: time for leases, the controller and owners to settle before the final reads.</summary>
    public long SettleUs { get; init; } = 600_000;

    public long NetDelayUsMin { get; init; } = 50;

    public long NetDelayUsMax { get; init; } = 1_000;

    /// <summary>Chance that a message is a straggler, delayed up to <see cref="SpikeUsMax"/>.</summary>
    public double SpikeRate { get; init; }

    public long SpikeUsMax { get; init; } = 30_000;

    /// <summary>Chance that one message (request or reply) is lost; on a replica link the connection then times out.</summary>
    public double LossRate { get; init; }

    public long DiskLatencyUsMax { get; init; } = 300;

    /// <summary>The TCP user timeout: a request unanswered this long breaks its replica connection.</summary>
    public long LinkTimeoutUs { get; init; } = 40_000;

    public long StoreTimeoutUs { get; init; } = 40_000;

    public long HeartbeatUs { get; init; } = 10_000;

    public long LeaseTtlUs { get; init; } = 60_000;

    public long ControllerTickUs { get; init; } = 5_000;

    /// <summary>Mean time between injected faults during the workload (0: none).</summary>
    public long FaultEveryUs { get; init; }

    public long FaultDurationUsMax { get; init; } = 150_000;

    /// <summary>A crash drops every cached write (true) or keeps a seeded part of the cache per block.</summary>
    public bool CrashLosesWholeCache { get; init; } = true;

    /// <summary>Requests on one replica connection may overtake each other (the protocol allows it; today's server does not).</summary>
    public bool ReorderWithinLink { get; init; }

    /// <summary>The owner's daemon stops serving once it cannot prove its lease (what <c>IOwnerLease</c> asks for).</summary>
    public bool OwnerHonoursLease { get; init; } = true;

    /// <summary>Deliberate defects, to prove the checker catches them (see <see cref="SimBugs"/>).</summary>
    public SimBugs Bugs { get; init; }

    public static SimOptions FromSeed(int seed)
    {
        var rng = new Random(unchecked(seed * 7919 + 17));
        return new SimOptions
        {
            Replicas = rng.Next(2, 5),
            Writers = rng.Next(1, 4),
            Readers = rng.Next(1, 3),
            NetDelayUsMax = rng.Next(4) == 0 ? 5_000 : 1_000,
            SpikeRate = rng.Next(3) == 0 ? 0.01 : 0,
            LossRate = rng.Next(4) switch { 0 => 0, 1 => 0.001, 2 => 0.005, _ => 0.02 },
            FaultEveryUs = rng.Next(6) == 0 ? 0 : rng.Next(30_000, 200_000),
            CrashLosesWholeCache = rng.Next(2) == 0,
            ReorderWithinLink = rng.Next(4) == 0,
        };
    }
}

/// <summary>Defects the checker's self-test switches on; a correct system has none.</summary>
[Flags]
internal enum SimBugs
{
    None = 0,
    /// <summary>The second replica's drive acknowledges writes and keeps nothing.</summary>
    ReplicaDropsWrites = 1,
    /// <summary>The owner drops a failed replica without the compare-and-swap that bumps the epoch: it carries on
    /// without it while the store still lists it in sync (invariant 2 says: bump first).</summary>
    SkipEpochBump = 2,
    /// <summary>The controller promotes any live replica, in sync or not.</summary>
    PromoteAnyReplica = 4,
    /// <summary>The controller fails over as soon as the owner misses one heartbeat, long before its lease expired.</summary>
    IgnoreLeaseOnFailover = 8,
    /// <summary>
    /// Production's failover rule before this simulation found its gaps: any live in-sync replica may be promoted, even
    /// one whose node restarted (and lost acknowledged writes from its cache) since it joined; and a failover is never
    /// undone, even when its new owner never served. Kept to show the seeds still catch it.
    /// </summary>
    FailOverWithoutBoots = 16,
}

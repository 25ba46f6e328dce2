using Cairn.Integration.Tests.Faults;

namespace Cairn.Integration.Tests;

/// <summary>The fault runs' cluster: 128 MiB pools (cheap to fill) and n3's pool on a drive that fails on demand.</summary>
public sealed class FaultRunClusterFixture : NetnsClusterFixture
{
    protected override NetnsClusterOptions Configure(NetnsClusterOptions defaults) =>
        defaults with { PoolCapacity = "128MiB", FaultyDriveNode = 3 };
}

/// <summary>
/// Seeded, randomized fault runs against etcd and three cairnd in network namespaces, each printing its seed (replay
/// one with CAIRN_FAULT_SEED=N, set the count with CAIRN_FAULT_RUNS), while fio writes with --verify=crc32c; then
/// every acknowledged block is verified. One batch on volumes with one replica (kill -9 and restart of another node,
/// isolation of another node, the owner cut from etcd and healed), one on volumes with three replicas
/// (<see cref="ReplicatedFaultRuns"/>). docs/FAULT-RUNS.md describes them.
/// </summary>
public sealed class FaultRunTests(FaultRunClusterFixture fixture) : IClassFixture<FaultRunClusterFixture>
{
    private readonly NetnsCluster _cluster = fixture.Cluster;

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact]
    public Task Randomized_single_replica_fault_runs_verify_every_acknowledged_block() =>
        FaultRunSeeds.RunAllAsync(_cluster, replicated: false, Log);

    [Fact]
    public Task Randomized_replicated_fault_runs_verify_every_acknowledged_block_and_resync_every_replica() =>
        ReplicatedFaultRuns.RunAsync(_cluster, Log);
}

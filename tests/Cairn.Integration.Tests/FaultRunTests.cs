using Cairn.Integration.Tests.Faults;

namespace Cairn.Integration.Tests;

/// <summary>The fault runs' cluster: 384 MiB pools (cheap to fill) and n3's pool on a drive that fails on demand.</summary>
public sealed class FaultRunClusterFixture : NetnsClusterFixture
{
    protected override NetnsClusterOptions Configure(NetnsClusterOptions defaults) =>
        defaults with { PoolCapacity = "384MiB", FaultyDriveNode = 3 };
}

/// <summary>
/// Seeded, randomized fault runs against etcd and three cairnd in network namespaces, each printing its seed
/// (replay one with CAIRN_FAULT_SEED=N, set the count with CAIRN_FAULT_RUNS). Today volumes have one replica, so
/// the runs inject the faults that do not need replication — kill -9 and restart of another node, isolation of
/// another node, the owner cut from etcd and healed — while fio writes with --verify=crc32c, then verify every
/// acknowledged block. The replicated runs are written in <see cref="ReplicatedFaultRuns"/>, waiting for replication.
/// </summary>
public sealed class FaultRunTests(FaultRunClusterFixture fixture) : IClassFixture<FaultRunClusterFixture>
{
    private readonly NetnsCluster _cluster = fixture.Cluster;

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact]
    public Task Randomized_single_replica_fault_runs_verify_every_acknowledged_block() =>
        FaultRunSeeds.RunAllAsync(_cluster, replicated: false, Log);
}

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// The replication issue's fault runs: 3 replicas per volume; kill -9 of a replica and of the owner during writes;
/// the owner isolated, cut from etcd and its peers, or from etcd alone (it must stop acknowledging once it cannot
/// prove its epoch, and never acknowledge after the new owner took over); IO errors on a replica's drive; a full pool
/// on a replica; every acknowledged block verified afterwards on the owner of the moment.
///
/// NOT YET INVOKED by any test: cairnd refuses --replicas 3 until replication is wired in. To switch the runs on,
/// add to <see cref="FaultRunTests"/>:
/// <code>
///   [Fact]
///   public Task Randomized_replicated_fault_runs_verify_every_acknowledged_block() =>
///       ReplicatedFaultRuns.RunAsync(_cluster, Log);
/// </code>
/// (docs/FAULT-RUNS.md says the same, and what to expect).
/// </summary>
internal static class ReplicatedFaultRuns
{
    public static Task RunAsync(NetnsCluster cluster, Action<string> log) =>
        FaultRunSeeds.RunAllAsync(cluster, replicated: true, log);
}

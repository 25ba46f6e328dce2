namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// The replication issue's fault runs: 3 replicas per volume; kill -9 of a replica and of the owner during writes;
/// the owner isolated, cut from etcd and its peers, or from etcd alone (it must stop acknowledging once it cannot
/// prove its epoch, and never acknowledge after the new owner took over); IO errors on a replica's drive; a full pool
/// on a replica; every acknowledged block verified afterwards on the owner of the moment.
///
/// Not yet in CI: after a run with drive errors the node's pool stays failed until that node restarts, and the runner
/// does not restart it yet, so the next run's create can land on a broken pool. Run by hand (docs/FAULT-RUNS.md):
/// every fault kind has verified every acknowledged block in manual runs.
/// </summary>
internal static class ReplicatedFaultRuns
{
    public static Task RunAsync(NetnsCluster cluster, Action<string> log) =>
        FaultRunSeeds.RunAllAsync(cluster, replicated: true, log);
}

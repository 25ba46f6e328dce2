namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// The replication issue's fault runs: 3 replicas per volume; kill -9 of a replica and of the owner during writes;
/// the owner isolated, cut from etcd and its peers, or from etcd alone (it must stop acknowledging once it cannot
/// prove its epoch, and never acknowledge after the new owner took over); IO errors on a replica's drive; a full pool
/// on a replica. Every acknowledged block is verified afterwards on the owner of the moment, then every replica must
/// be back in sync (rebuild and resync under faults) before the volume is deleted. Run in CI by <see cref="FaultRunTests"/>.
/// </summary>
internal static class ReplicatedFaultRuns
{
    public static Task RunAsync(NetnsCluster cluster, Action<string> log) =>
        FaultRunSeeds.RunAllAsync(cluster, replicated: true, log);
}

using Cairn.Integration.Tests.Faults;

namespace Cairn.Integration.Tests;

/// <summary>
/// The fault harness itself, today, on one replica per volume: etcd and three cairnd in network namespaces
/// (<see cref="NetnsCluster"/>) see cuts and kills as the cluster should, IO to a healthy node carries on while another
/// is cut off, a failing drive surfaces as NBD errors and a full pool as ENOSPC.
/// </summary>
public sealed class NetnsHarnessTests(HarnessClusterFixture fixture) : IClassFixture<HarnessClusterFixture>, IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60); // a 2 s lease, on a loaded 2-core machine
    private readonly NetnsCluster _cluster = fixture.Cluster;
    private readonly ClusterApi _api = new(fixture.Cluster);

    public void Dispose() => _api.Dispose();

    [Fact]
    public async Task Membership_follows_cuts_from_etcd_isolation_and_kill_9()
    {
        var (n1, n2, n3) = (_cluster["n1"], _cluster["n2"], _cluster["n3"]);
        foreach (var node in _cluster.Nodes)
        {
            await _api.WaitForStateAsync(n1, node, "Up", Deadline);
        }
        try
        {
            // Cut from etcd only: its lease expires, but the test still reaches its API over the bridge.
            await _cluster.CutFromEtcdAsync(n3);
            await _api.WaitForStateAsync(n1, n3, "Down", Deadline);
            Assert.True(await _api.AnswersAsync(n3, TimeSpan.FromSeconds(10)), "n3's API must still answer the test while only etcd is cut off");
            await _cluster.HealAsync(n3);
            await _api.WaitForStateAsync(n2, n3, "Up", Deadline);

            // Isolated from everything: Down for the others, and silent for the test too.
            await _cluster.IsolateAsync(n2);
            await _api.WaitForStateAsync(n1, n2, "Down", Deadline);
            Assert.False(await _api.AnswersAsync(n2, TimeSpan.FromSeconds(2)), "an isolated node must not answer");
            await _cluster.HealAsync(n2);
            await _api.WaitForStateAsync(n3, n2, "Up", Deadline);

            await _cluster.Kill9Async(n2);
            await _api.WaitForStateAsync(n1, n2, "Down", Deadline);
            await _cluster.RestartAsync(n2);
            await _api.WaitForStateAsync(n1, n2, "Up", Deadline);
        }
        finally
        {
            await _cluster.HealAllAsync();
        }
    }
}

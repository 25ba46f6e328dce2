using System.Diagnostics;
using Cairn.Integration.Tests.Faults;
using Cairn.Integration.Tests.Support;

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

    [Fact]
    public async Task Nbd_io_to_a_healthy_node_carries_on_while_other_nodes_are_cut_off()
    {
        var (n1, n2, n3) = (_cluster["n1"], _cluster["n2"], _cluster["n3"]);
        await _api.CreateVolumeOrThrowAsync(n2, "steady", 32 << 20, replicas: 1, node: "n1");
        try
        {
            using var client = await MiniNbdClient.ConnectAsync(n1.Ip, NetnsNode.NbdPort, "steady", TimeSpan.FromSeconds(30));
            using var stop = new CancellationTokenSource();
            int written = 0;
            var writer = Task.Run(() =>
            {
                var block = new byte[4096];
                for (; !stop.IsCancellationRequested && written < 8192; written++)
                {
                    Array.Fill(block, (byte)(written % 251 + 1));
                    client.Write((long)written * block.Length, block);
                    if (written % 16 == 15)
                    {
                        client.Flush();
                    }
                }
            });
            await Eventually.HoldsAsync(() => written > 64 || writer.IsCompleted, Deadline, "the writer gets going");
            await _cluster.IsolateAsync(n2);
            await _cluster.CutFromClusterAsync(n3);
            int atCut = written;
            await _api.WaitForStateAsync(n1, n2, "Down", Deadline);
            await _api.WaitForStateAsync(n1, n3, "Down", Deadline);
            await Eventually.HoldsAsync(() => written > atCut + 64 || writer.IsCompleted, Deadline, "writes carry on after the cut");
            await stop.CancelAsync();
            await writer; // rethrows any IO error the client saw
            Assert.True(written > atCut, $"no write completed after the cut ({atCut} before it)");
            client.Flush();
            var read = new byte[4096];
            for (int i = 0; i < written; i++)
            {
                client.Read((long)i * read.Length, read);
                Assert.True(read.AsSpan().IndexOfAnyExcept((byte)(i % 251 + 1)) < 0, $"block {i} does not read back what was written");
            }
            TestContext.Current.TestOutputHelper?.WriteLine($"{written} blocks written and read back, {written - atCut} after the cut");
        }
        finally
        {
            await _cluster.HealAllAsync();
            await _api.DeleteVolumeAsync(n1, "steady");
        }
    }

    /// <summary>Waits until every node sees every other one Up (generous: a node cut from etcd rejoins on its next heartbeat).</summary>
    private async Task AllUpAsync()
    {
        foreach (var node in _cluster.Nodes)
        {
            foreach (var witness in _cluster.Nodes.Where(n => n != node))
            {
                await _api.WaitForStateAsync(witness, node, "Up", TimeSpan.FromSeconds(60));
            }
        }
    }

    [Fact]
    public async Task Io_errors_on_a_nodes_drive_reach_the_nbd_client_as_errors_not_hangs_or_success()
    {
        var n3 = _cluster["n3"];
        var drive = _cluster.Drive!;
        await AllUpAsync(); // the tests share one cluster: an earlier one may have just healed or restarted a node
        await _api.CreateVolumeOrThrowAsync(n3, "failing", 32 << 20, replicas: 1, node: "n3");
        try
        {
            using var client = await MiniNbdClient.ConnectAsync(n3.Ip, NetnsNode.NbdPort, "failing", TimeSpan.FromSeconds(60));
            var chunk = new byte[64 << 10];
            Random.Shared.NextBytes(chunk);
            client.Write(0, chunk);
            client.Flush();

            drive.InjectErrors();
            var clock = Stopwatch.StartNew();
            IOException? error = null;
            for (int i = 1; i < 256 && error is null; i++)
            {
                try
                {
                    client.Write((long)i * chunk.Length, chunk);
                    client.Flush();
                }
                catch (IOException e)
                {
                    error = e;
                }
            }
            Assert.NotNull(error); // 256 acknowledged flushes on a dead drive would be silent success
            TestContext.Current.TestOutputHelper?.WriteLine($"client saw '{error.Message}' {clock.Elapsed.TotalSeconds:F1} s after errors began");
            Assert.StartsWith("NBD error", error.Message, StringComparison.Ordinal); // a reply carrying an errno, not a socket timeout
        }
        finally
        {
            drive.Heal();
            await _api.DeleteVolumeAsync(n3, "failing");
        }
    }

    [Fact]
    public async Task A_full_pool_answers_writes_with_no_space()
    {
        var n2 = _cluster["n2"];
        const long VolumeBytes = 64 << 20;
        await AllUpAsync();
        await _api.CreateVolumeOrThrowAsync(n2, "crowded", VolumeBytes, replicas: 1, node: "n2");
        try
        {
            long fillerBytes = (await _api.PoolFreeBytesAsync(n2) - (16 << 20)) / (1 << 20) * (1 << 20);
            await _api.CreateVolumeOrThrowAsync(n2, "filler", fillerBytes, replicas: 1, node: "n2");
            (await ToolRun.RunAsync("fio", ["--name=fill", "--ioengine=nbd", $"--uri={n2.NbdUri("filler")}", "--rw=write", "--bs=1M",
                "--iodepth=4", $"--size={fillerBytes}", "--output-format=terse"], TimeSpan.FromMinutes(5))).EnsureSuccess();
            TestContext.Current.TestOutputHelper?.WriteLine($"filled {fillerBytes >> 20} MiB; pool free now {await _api.PoolFreeBytesAsync(n2) >> 20} MiB");

            using var client = await MiniNbdClient.ConnectAsync(n2.Ip, NetnsNode.NbdPort, "crowded", TimeSpan.FromSeconds(60));
            var chunk = new byte[1 << 20];
            Random.Shared.NextBytes(chunk);
            long offset = 0;
            var error = Assert.Throws<IOException>(() =>
            {
                for (; offset < VolumeBytes; offset += chunk.Length)
                {
                    client.Write(offset, chunk);
                }
                client.Flush();
            });
            TestContext.Current.TestOutputHelper?.WriteLine($"'{error.Message}' after {offset >> 20} MiB");
            Assert.Equal("NBD error 28", error.Message); // ENOSPC
        }
        finally
        {
            await _api.DeleteVolumeAsync(n2, "crowded");
            await _api.DeleteVolumeAsync(n2, "filler");
        }
    }
}

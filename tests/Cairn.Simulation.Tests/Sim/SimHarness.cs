using System.Runtime.ExceptionServices;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// A cluster with no random faults and no background workload, driven by a scripted scenario that runs inside the
/// simulation (so it may await simulated time, crash nodes and cut links at chosen moments). The checker still
/// watches every operation the script makes.
/// </summary>
internal sealed class SimHarness
{
    private readonly long[] _versions;

    public SimHarness(SimOptions options, Action<string>? trace = null)
    {
        Sim = new SimScheduler(seed: 1, trace);
        Cluster = new SimCluster(Sim, options);
        Checker = new Checker(Cluster);
        _versions = new long[options.Blocks];
    }

    /// <summary>No faults but those the script injects.</summary>
    public static SimOptions Quiet(int replicas) => new() { Replicas = replicas, FaultEveryUs = 0, LossRate = 0, SpikeRate = 0 };

    public SimScheduler Sim { get; }

    public SimCluster Cluster { get; }

    public Checker Checker { get; }

    public SimClient Client(int id, string? pinnedTo = null) => new(Cluster, Checker, id, [], _versions) { PinnedTo = pinnedTo };

    public Task Sleep(long us) => Sim.Delay(us);

    /// <summary>A write through <paramref name="client"/>, retried across failovers for up to a second (one try when pinned).</summary>
    public Task<ClientResult> Write(SimClient client, int block, long version, bool fua = false) =>
        client.ExecuteAsync(new ClientOp(OpKind.Write, block, version, fua, 0), Deadline(client));

    public Task<ClientResult> Read(SimClient client, int block) =>
        client.ExecuteAsync(new ClientOp(OpKind.Read, block, 0, false, 0), Deadline(client));

    /// <summary>Runs <paramref name="script"/> to its end (at most <paramref name="maxUs"/> of simulated time), rethrowing its failure.</summary>
    public void Run(Func<Task> script, long maxUs = 5_000_000)
    {
        Task? run = null;
        Sim.At(0, () => run = script());
        while ((run is null || !run.IsCompleted) && Sim.NowUs < maxUs)
        {
            Sim.RunUntil(Sim.NowUs + 10_000);
        }
        if (run is null || !run.IsCompleted)
        {
            throw new TimeoutException($"the scenario did not finish within {maxUs} µs of simulated time");
        }
        if (run.Exception is { } failed)
        {
            ExceptionDispatchInfo.Capture(failed.GetBaseException()).Throw();
        }
        Assert.Empty(Cluster.Errors);
    }

    private long Deadline(SimClient client) => Sim.NowUs + (client.PinnedTo is null ? 1_000_000 : 1);
}

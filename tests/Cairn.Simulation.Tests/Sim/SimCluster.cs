using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The simulated world: nodes n0..n(k-1) each holding one replica of one volume, the network between them and the
/// cluster store, the store itself, and the controller. n0 owns the volume at epoch 1. Faults are injected through
/// <see cref="Crash"/>, <see cref="Restart"/> and the network's partitions, by <see cref="Nemesis"/> or by a test.
/// </summary>
internal sealed class SimCluster
{
    private readonly List<string> _errors = [];

    public SimCluster(SimScheduler sim, SimOptions options)
    {
        Sim = sim;
        Options = options;
        Network = new SimNetwork(sim, options);
        for (int i = 0; i < options.Replicas; i++)
        {
            Nodes[$"n{i}"] = new SimNode(this, $"n{i}");
        }
        Store = new SimClusterStore(sim, ReplicaSet.Create([.. Nodes.Keys.Select(n => (n, "pool"))], n => SimClusterStore.Boot(Nodes[n].Incarnation)),
            options.LeaseTtlUs);
        if ((options.Bugs & SimBugs.ReplicaDropsWrites) != 0)
        {
            Nodes["n1"].Disk.DropsWrites = true;
        }
        foreach (var node in Nodes.Values)
        {
            Store.Heartbeat(node.Name, 0); // bootstrap: every node registered before the run starts
            node.Start();
        }
        Spawn(new SimController(this).RunAsync);
    }

    public SimScheduler Sim { get; }

    public SimOptions Options { get; }

    public SimNetwork Network { get; }

    public SimClusterStore Store { get; }

    public Dictionary<string, SimNode> Nodes { get; } = new(StringComparer.Ordinal);

    /// <summary>An owner acknowledged an operation: (owner node, operation, when the owner started it).</summary>
    public event Action<string, ClientOp, long>? Acknowledged;

    /// <summary>A node crashed (before its drive loses its cache).</summary>
    public event Action<string>? Crashed;

    /// <summary>Failures of the simulation's own flows (a bug in the harness or an unexpected exception from the code under test).</summary>
    public IReadOnlyList<string> Errors => _errors;

    public void OnAcknowledged(string owner, ClientOp op, long startedUs) => Acknowledged?.Invoke(owner, op, startedUs);

    public void Spawn(Func<Task> flow) => Sim.Spawn(flow, e => ReportError($"{e.GetType().Name}: {e.Message}\n{e.StackTrace}"));

    public void ReportError(string error)
    {
        Sim.Trace($"ERROR: {error}");
        _errors.Add(error);
    }

    public void Crash(string node)
    {
        if (Nodes[node].IsUp)
        {
            Crashed?.Invoke(node);
            Nodes[node].Crash();
        }
    }

    public void Restart(string node)
    {
        if (!Nodes[node].IsUp)
        {
            Nodes[node].Start();
        }
    }

    /// <summary>Ends every fault: partitions heal, crashed nodes restart, the network stops losing and straggling.</summary>
    public void HealAll()
    {
        Sim.Trace("-- heal: partitions closed, nodes restarted, network clean");
        Network.Faulty = false;
        Network.HealAll();
        foreach (var node in Nodes.Keys)
        {
            Restart(node);
        }
    }
}

/// <summary>
/// Injects the seed's faults during the workload: crashes of the owner or of any node (restarted later), partitions
/// between the owner and the store, between the owner and a replica, or between any node and the store — each healed
/// after a seeded while. Times between faults are exponential around <see cref="SimOptions.FaultEveryUs"/>.
/// </summary>
internal sealed class Nemesis(SimCluster cluster)
{
    public async Task RunAsync()
    {
        var sim = cluster.Sim;
        var options = cluster.Options;
        if (options.FaultEveryUs <= 0)
        {
            return;
        }
        while (true)
        {
            await sim.Delay((long)(-Math.Log(1 - sim.Rng.NextDouble()) * options.FaultEveryUs));
            if (sim.NowUs >= options.WorkloadUs)
            {
                return;
            }
            Inject(sim.Rng.NextInt64(5_000, options.FaultDurationUsMax));
        }
    }

    private void Inject(long durationUs)
    {
        var sim = cluster.Sim;
        var nodes = cluster.Nodes.Keys.ToList();
        string owner = cluster.Store.Set.Owner;
        string any = nodes[sim.Rng.Next(nodes.Count)];
        string other = nodes[sim.Rng.Next(nodes.Count)];
        switch (sim.Rng.Next(6))
        {
            case 0:
                CrashFor(owner, durationUs);
                break;
            case 1:
                CrashFor(any, durationUs);
                break;
            case 2:
                CutFor(owner, SimNetwork.Store, durationUs);
                break;
            case 3:
                CutFor(any, SimNetwork.Store, durationUs);
                break;
            default:
                if (other == owner)
                {
                    other = any;
                }
                if (other != owner)
                {
                    CutFor(owner, other, durationUs);
                }
                break;
        }
    }

    private void CrashFor(string node, long durationUs)
    {
        if (!cluster.Nodes[node].IsUp)
        {
            return;
        }
        cluster.Crash(node);
        int boot = cluster.Nodes[node].Incarnation;
        cluster.Sim.At(durationUs, () =>
        {
            if (cluster.Nodes[node].Incarnation == boot)
            {
                cluster.Restart(node);
            }
        });
    }

    private void CutFor(string a, string b, long durationUs)
    {
        cluster.Network.Cut(a, b);
        cluster.Sim.At(durationUs, () => cluster.Network.Heal(a, b));
    }
}

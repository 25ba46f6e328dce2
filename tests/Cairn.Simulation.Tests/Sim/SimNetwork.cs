namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// Who can reach whom, and how long a message takes. Partitions cut a pair of endpoints (nodes, or a node and the
/// cluster store) in both directions; a message is checked when it arrives, so one in flight when the cut happens is
/// lost. Delays are seeded per message, with occasional stragglers; loss is seeded per message.
/// </summary>
internal sealed class SimNetwork(SimScheduler sim, SimOptions options)
{
    public const string Store = "store";

    private readonly HashSet<(string, string)> _cut = [];

    /// <summary>Switched off when the run heals, so the final audit runs on a clean network.</summary>
    public bool Faulty { get; set; } = true;

    public bool Reachable(string a, string b) => !_cut.Contains(Key(a, b));

    public void Cut(string a, string b)
    {
        if (_cut.Add(Key(a, b)))
        {
            sim.Trace($"partition {a} | {b}");
        }
    }

    public void Heal(string a, string b)
    {
        if (_cut.Remove(Key(a, b)))
        {
            sim.Trace($"heal {a} | {b}");
        }
    }

    public void HealAll()
    {
        foreach (var (a, b) in _cut.Order().ToList())
        {
            Heal(a, b);
        }
    }

    public long DelayUs()
    {
        long delay = sim.Rng.NextInt64(options.NetDelayUsMin, options.NetDelayUsMax + 1);
        if (Faulty && options.SpikeRate > 0 && sim.Rng.NextDouble() < options.SpikeRate)
        {
            delay += sim.Rng.NextInt64(options.SpikeUsMax);
        }
        return delay;
    }

    public bool Lost() => Faulty && options.LossRate > 0 && sim.Rng.NextDouble() < options.LossRate;

    private static (string, string) Key(string a, string b) => string.CompareOrdinal(a, b) < 0 ? (a, b) : (b, a);
}

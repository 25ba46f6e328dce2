using System.Globalization;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// Which seeds a batch of fault runs uses: CAIRN_FAULT_SEED=N replays exactly that one; otherwise CAIRN_FAULT_RUNS
/// (default 20) consecutive seeds from a random start, so every CI run explores new ones and prints them.
/// </summary>
internal static class FaultRunSeeds
{
    public const int DefaultRuns = 20;

    public static IReadOnlyList<int> Choose()
    {
        if (Read("CAIRN_FAULT_SEED") is { } seed)
        {
            return [seed];
        }
        int runs = Read("CAIRN_FAULT_RUNS") ?? DefaultRuns;
        int first = Random.Shared.Next(1, 1_000_000);
        return [.. Enumerable.Range(first, runs)];
    }

    private static int? Read(string variable) =>
        Environment.GetEnvironmentVariable(variable) is { Length: > 0 } text
            ? int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value >= 0
                ? value
                : throw new FormatException($"{variable}='{text}' is not a non-negative whole number")
            : null;

    /// <summary>Runs the plans one after another on one cluster; the first failure stops the batch and names its seed.</summary>
    public static async Task RunAllAsync(NetnsCluster cluster, bool replicated, Action<string> log)
    {
        var seeds = Choose();
        log($"fault runs ({(replicated ? "3 replicas" : "1 replica")}): seeds {seeds[0]}..{seeds[^1]} ({seeds.Count} runs); replay one with CAIRN_FAULT_SEED=N");
        using var api = new ClusterApi(cluster);
        var runner = new FaultRunner(cluster, api, log);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        foreach (int seed in seeds)
        {
            await runner.RunAsync(FaultPlan.ForSeed(seed, replicated, cluster.Nodes.Count));
        }
        log($"{seeds.Count} fault runs passed in {clock.Elapsed.TotalSeconds:F0} s");
    }
}

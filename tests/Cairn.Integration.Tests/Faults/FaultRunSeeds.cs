using System.Globalization;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// Which seeds a batch of fault runs uses: CAIRN_FAULT_SEED=N replays exactly that one; otherwise CAIRN_FAULT_RUNS
/// (default: the batch's own count) consecutive seeds from a random start, so every CI run explores new ones and
/// prints them. Consecutive seeds take the fault kinds in turn, so a batch at least as long as the list of kinds covers each.
/// </summary>
internal static class FaultRunSeeds
{
    /// <summary>Runs of the three-replica batch in CI: the issue asks for at least 20.</summary>
    public const int DefaultReplicatedRuns = 20;

    /// <summary>Runs of the one-replica batch in CI: its three fault kinds, each at least twice.</summary>
    public const int DefaultSingleReplicaRuns = 8;

    public static IReadOnlyList<int> Choose(int defaultRuns)
    {
        if (Read("CAIRN_FAULT_SEED") is { } seed)
        {
            return [seed];
        }
        int runs = Read("CAIRN_FAULT_RUNS") ?? defaultRuns;
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
        var seeds = Choose(replicated ? DefaultReplicatedRuns : DefaultSingleReplicaRuns);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var untimed = log;
        log = line => untimed($"{clock.Elapsed.TotalSeconds,6:F1} s  {line}"); // when each step happened, to read a slow or failed run
        log($"fault runs ({(replicated ? "3 replicas" : "1 replica")}): seeds {seeds[0]}..{seeds[^1]} ({seeds.Count} runs); replay one with CAIRN_FAULT_SEED=N");
        using var api = new ClusterApi(cluster);
        var runner = new FaultRunner(cluster, api, log);
        foreach (int seed in seeds)
        {
            await runner.RunAsync(FaultPlan.ForSeed(seed, replicated, cluster.Nodes.Count, cluster.DriveNode?.Index ?? 0));
        }
        log($"{seeds.Count} fault runs passed in {clock.Elapsed.TotalSeconds:F0} s");
    }
}

using System.CommandLine;

namespace Cairn.Cli;

/// <summary>The placement options of <c>cairn volume create</c>: replica count, spread, pins, and the dry run that explains.</summary>
internal sealed class PlacementOptions
{
    public Option<int?> Replicas { get; } = new("--replicas") { Description = "Number of replicas, each on its own node (default 1).", HelpName = "N" };

    public Option<string?> Spread { get; } = new("--spread")
    {
        Description = "Failure domain replicas must not share: node, rack or zone; add :preferred to fall back when the cluster cannot (e.g. zone:preferred).",
        HelpName = "LEVEL[:MODE]",
    };

    public Option<string?> Node { get; } = new("--node") { Description = "Put the volume on this node instead of letting placement choose (with --replicas: its owner; placement places the others).", HelpName = "NODE" };

    public Option<string?> Pool { get; } = new("--pool") { Description = "With --node: the pool on that node.", HelpName = "POOL" };

    public Option<bool> DryRun { get; } = new("--dry-run") { Description = "Only show where the volume would go; create nothing." };

    public Option<bool> Explain { get; } = new("--explain") { Description = "Show every node placement considered and why it was chosen or excluded." };

    public CreateVolumeDto Request(ParseResult r, string name, string size) =>
        new(name, size, r.GetValue(Replicas), r.GetValue(Spread), r.GetValue(Node), r.GetValue(Pool));
}

using System.Text.Json.Serialization;

namespace Cairn.ControlPlane.Placement;

/// <summary>The failure domain that replicas of one volume must (or should) not share.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<SpreadLevel>))]
public enum SpreadLevel
{
    /// <summary>Replicas on different nodes (always true: two replicas never share a node).</summary>
    Node,
    /// <summary>Replicas in different racks (a rack is named within its zone).</summary>
    Rack,
    /// <summary>Replicas in different zones.</summary>
    Zone,
}

/// <summary>Whether the spread is a hard rule or a wish placement gives up on when the cluster cannot meet it.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<SpreadMode>))]
public enum SpreadMode
{
    Required,
    Preferred,
}

/// <summary>How many replicas a volume has and how they must be spread over failure domains.</summary>
public sealed record PlacementPolicy(int Replicas = 1, SpreadLevel Spread = SpreadLevel.Node, SpreadMode Mode = SpreadMode.Required)
{
    /// <summary>Enough for three-way replication across zones plus spares; more is almost certainly a typo.</summary>
    public const int MaxReplicas = 5;

    public static PlacementPolicy Default { get; } = new();

    /// <summary>Parses "node", "rack", "zone", optionally suffixed ":required" or ":preferred" (the CLI's and API's spelling).</summary>
    public static (SpreadLevel Level, SpreadMode Mode) ParseSpread(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return (SpreadLevel.Node, SpreadMode.Required);
        }
        string[] parts = text.Trim().Split(':');
        if (parts.Length > 2 || !Enum.TryParse(parts[0], ignoreCase: true, out SpreadLevel level) || int.TryParse(parts[0], out _))
        {
            throw Invalid(text);
        }
        var mode = SpreadMode.Required;
        if (parts.Length == 2 && (!Enum.TryParse(parts[1], ignoreCase: true, out mode) || int.TryParse(parts[1], out _)))
        {
            throw Invalid(text);
        }
        return (level, mode);
    }

    /// <summary>Checks the replica count; throws a <see cref="CairnException"/> naming <c>replicas</c> otherwise.</summary>
    public static void ValidateReplicas(int replicas)
    {
        if (replicas is < 1 or > MaxReplicas)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, $"replicas must be between 1 and {MaxReplicas}, not {replicas}", "replicas");
        }
    }

    /// <summary>"zone (required)", for explanations and tables.</summary>
    public string Describe() => $"{Replicas} replica{(Replicas == 1 ? "" : "s")}, spread by {Spread.ToString().ToLowerInvariant()} ({Mode.ToString().ToLowerInvariant()})";

    private static CairnException Invalid(string text) =>
        new(CairnErrorCode.InvalidArgument, $"spread '{text}' is not one of node, rack, zone, optionally followed by :required or :preferred (e.g. zone:preferred)", "spread");
}

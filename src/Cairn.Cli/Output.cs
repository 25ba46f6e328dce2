using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Cairn.Cli;

/// <summary>Renders results: Spectre tables for people, the API's JSON (indented) with --json.</summary>
internal sealed partial class Output(TextWriter writer, bool json)
{
    private readonly IAnsiConsole _console = CreateConsole(writer);

    public bool Json { get; } = json;

    private static IAnsiConsole CreateConsole(TextWriter writer)
    {
        bool terminal = ReferenceEquals(writer, Console.Out) && !Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(writer),
        });
        if (!terminal)
        {
            console.Profile.Width = 240; // pipes and files: never wrap a row
        }
        return console;
    }

    public void RawJson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var jsonWriter = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            doc.WriteTo(jsonWriter);
        }
        writer.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan));
    }

    public void Line(string text) => writer.WriteLine(text);

    public void Volumes(IReadOnlyList<VolumeDto> volumes)
    {
        if (volumes.Count == 0)
        {
            Line("No volumes. Create one with: cairn volume create NAME --size 10GiB");
            return;
        }
        var table = NewTable("NAME", "SIZE", "ALLOCATED", "NODE", "POOL", "CLIENTS", "EXPORT");
        foreach (var v in volumes)
        {
            table.AddRow(Cells(v.Name, v.Size, v.Available ? v.Allocated : "-", v.Node ?? "-", v.Pool, (v.Clients?.Count ?? 0).ToString(CultureInfo.InvariantCulture), ExportOf(v)));
        }
        _console.Write(table);
    }

    public void Volume(VolumeDto v)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap().PadRight(2)).AddColumn();
        void Row(string key, string value) => grid.AddRow(new Text(key), new Text(value));
        Row("Name", v.Name);
        Row("ID", v.Id);
        Row("Size", $"{v.Size} ({v.SizeBytes.ToString(CultureInfo.InvariantCulture)} bytes)");
        Row("Allocated", $"{v.Allocated} ({v.AllocatedBytes.ToString(CultureInfo.InvariantCulture)} bytes)");
        Row("Pool", v.Pool);
        Row("Node", v.Node ?? "-");
        if (v.Placement is { } p)
        {
            Row("Placement", $"{p.Replicas.ToString(CultureInfo.InvariantCulture)} replica{(p.Replicas == 1 ? "" : "s")}, spread by {p.Spread} ({p.Mode})");
        }
        if (v.Health is { } health)
        {
            Row("Health", $"{health.State}: {health.Reason}");
        }
        if (v.Replicas is { Count: > 1 } replicas)
        {
            Row("Epoch", v.Epoch?.ToString(CultureInfo.InvariantCulture) ?? "-");
            Row("Replicas", string.Join('\n', replicas.Select(ReplicaLine)));
        }
        Row("Created", v.CreatedAt.ToString("u", CultureInfo.InvariantCulture));
        Row("Export", ExportOf(v));
        if (v.Iscsi is { } iscsi && v.Available)
        {
            Row("iSCSI", $"portal {iscsi.Portal}, target {iscsi.Target}, LUN {iscsi.Lun.ToString(CultureInfo.InvariantCulture)}");
            Row("iSCSI access", AccessOf(iscsi.Access));
            Row("Log in", string.Join('\n', iscsi.Login ?? []));
        }
        var clients = v.Clients ?? [];
        Row("Clients", clients.Count == 0 ? "none" : string.Join(", ", clients.Select(c => c.Client)));
        _console.Write(grid);
    }

    private static string ReplicaLine(ReplicaDto r)
    {
        string state = r.State == "Rebuilding" && r.Progress is { } percent ? $"Rebuilding {percent.ToString("F0", CultureInfo.InvariantCulture)}%" : r.State;
        string role = r.Owner ? " (owner)" : "";
        string reason = r.Reason is { } why && r.State != "InSync" ? $" — {why}" : "";
        return $"{r.Node} pool {r.Pool}: {state}{role}{reason}{RebuildNote(r.LastRebuild)}";
    }

    /// <summary>What the last finished rebuild moved, e.g. "; last rebuild: delta, 64.0 KiB in 0.1 s (0.5 MB/s)".</summary>
    private static string RebuildNote(RebuildDto? rebuild) => rebuild is null ? "" : string.Create(CultureInfo.InvariantCulture,
        $"; last rebuild: {rebuild.Kind}, {Bytes(rebuild.DataBytes)} in {rebuild.Seconds:F1} s ({rebuild.MegabytesPerSecond:F1} MB/s)");

    private static string Bytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = 0;
        for (; value >= 1024 && unit < units.Length - 1; unit++)
        {
            value /= 1024;
        }
        return unit == 0 ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B") : string.Create(CultureInfo.InvariantCulture, $"{value:F1} {units[unit]}");
    }

    /// <summary>Who may log in, in words; the API never sends secrets, and neither would this print them.</summary>
    private static string AccessOf(IscsiAccessDto? access)
    {
        string initiators = access?.AllowedInitiators is { Count: > 0 } names ? string.Join(", ", names) : "any";
        string chap = access is { Chap: true } ? $"enabled, user {access.ChapUser}" : "none";
        string mutual = access is { MutualChap: true } ? $"; mutual chap: enabled, user {access.MutualChapUser}" : "";
        return $"initiators: {initiators}; chap: {chap}{mutual}";
    }

    public void Pools(IReadOnlyList<PoolDto> pools)
    {
        if (pools.Count == 0)
        {
            Line("No pools. Start cairnd with --pool PATH[:SIZE].");
            return;
        }
        var table = NewTable("NAME", "CAPACITY", "USED", "FREE", "VOLUMES", "DIRECTORY");
        foreach (var p in pools)
        {
            table.AddRow(Cells(p.Name, p.Capacity, p.Used, p.Free, p.Volumes.ToString(CultureInfo.InvariantCulture), p.Directory));
        }
        _console.Write(table);
        foreach (var failed in pools.Where(p => p.Fault is not null))
        {
            Line($"Pool '{failed.Name}' has failed: {failed.Fault}");
        }
    }

    public void Nodes(IReadOnlyList<NodeDto> nodes)
    {
        if (nodes.Count == 0)
        {
            Line("No nodes have joined.");
            return;
        }
        var table = NewTable("NAME", "STATE", "ZONE", "RACK", "ADDRESS", "LAST HEARTBEAT", "POOLS (FREE / CAPACITY)");
        foreach (var n in nodes)
        {
            var pools = n.Pools ?? [];
            // The CLI ships without Cairn.Core, so it shows the API's own formatted sizes rather than adding them up.
            string poolCell = pools.Count == 0 ? "-" : string.Join(", ", pools.Select(p => $"{p.Name} {p.Free} / {p.Capacity}"));
            table.AddRow(Cells(n.Name, StateOf(n), n.Zone, n.Rack, n.ApiAddress ?? "-", When(n.LastHeartbeat), poolCell));
        }
        _console.Write(table);
    }

    public void Node(NodeDto n)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap().PadRight(2)).AddColumn();
        void Row(string key, string value) => grid.AddRow(new Text(key), new Text(value));
        Row("Name", n.Name);
        Row("State", StateOf(n));
        Row("Zone", n.Zone);
        Row("Rack", n.Rack);
        Row("API", n.ApiAddress ?? "-");
        Row("NBD", n.NbdAddress ?? "-");
        Row("Started", When(n.StartedAt));
        Row("Last heartbeat", When(n.LastHeartbeat));
        Row("Registered", When(n.RegisteredAt));
        _console.Write(grid);
        var pools = n.Pools ?? [];
        if (pools.Count > 0)
        {
            var table = NewTable("POOL", "CAPACITY", "USED", "FREE");
            foreach (var p in pools)
            {
                table.AddRow(Cells(p.Name, p.Capacity, p.Used, p.Free));
            }
            _console.Write(table);
        }
    }

    public void Cluster(ClusterDto c)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap().PadRight(2)).AddColumn();
        void Row(string key, string value) => grid.AddRow(new Text(key), new Text(value));
        Row("Store", c.Store);
        Row("This node", c.ThisNode);
        Row("Controller", c.Leader is null ? "none elected" : $"{c.Leader} (since {When(c.LeaderSince)})");
        Row("Nodes", $"{c.NodesUp} up, {c.NodesDraining} draining, {c.NodesDown} down");
        _console.Write(grid);
    }

    /// <summary>Down wins over the flag in STATE, but a Down node that is also draining says so.</summary>
    private static string StateOf(NodeDto n) => n.State == "Down" && n.Draining ? "Down (draining)" : n.State;

    private static string When(DateTimeOffset? time) => time?.ToString("u", CultureInfo.InvariantCulture) ?? "-";

    private static string ExportOf(VolumeDto v) => v.Available ? v.Export ?? "-" : "unavailable (its node is down or its pool is not open)";

    /// <summary>A placement: the choice (or why there is none), and with <paramref name="explain"/> every node's verdict.</summary>
    public void Placement(PlacementDto plan, bool explain)
    {
        var p = plan.Policy;
        string policy = $"{p.Replicas.ToString(CultureInfo.InvariantCulture)} replica{(p.Replicas == 1 ? "" : "s")}, spread by {p.Spread} ({p.Mode})";
        Line(plan.Placed
            ? $"Volume '{plan.Volume}' ({plan.Size}, {policy}) would go to: {string.Join(", ", plan.Replicas.Select(r => $"{r.Node}/{r.Pool} (zone {r.Zone}, rack {r.Rack})"))}."
            : $"Volume '{plan.Volume}' ({plan.Size}, {policy}) cannot be placed: {plan.Reason}.");
        if (!explain)
        {
            return;
        }
        var table = NewTable("NODE", "ZONE", "RACK", "POOL", "VERDICT", "WHY");
        foreach (var n in plan.Nodes)
        {
            table.AddRow(Cells(n.Node, n.Zone, n.Rack, n.Pool ?? "-", n.Verdict, n.Reason));
        }
        _console.Write(table);
    }

    private static Table NewTable(params string[] headers)
    {
        var table = new Table().Border(TableBorder.Simple);
        foreach (var h in headers)
        {
            table.AddColumn(new TableColumn(new Text(h)).NoWrap());
        }
        return table;
    }

    /// <summary>Plain text cells: names and paths must never be read as Spectre markup.</summary>
    private static IRenderable[] Cells(params string[] values) => [.. values.Select(v => new Text(v))];
}

namespace Cairn.Testing;

/// <summary>One cairnd of a <see cref="NetnsCluster"/>: its namespace, its address on the bridge and its process.</summary>
public sealed class NetnsNode
{
    public const int ApiPort = 9410;
    public const int NbdPort = 10809;
    public const int IscsiPort = 3260;

    internal NetnsNode(int index, string name, string netns, string ip, string hubLink, string dataDirectory, string poolSpec)
    {
        Index = index;
        Name = name;
        Namespace = netns;
        Ip = ip;
        HubLink = hubLink;
        DataDirectory = dataDirectory;
        PoolSpec = poolSpec;
    }

    /// <summary>1-based position in the cluster (node n1 is index 1).</summary>
    public int Index { get; }

    /// <summary>The cairnd node name (n1, n2, ...).</summary>
    public string Name { get; }

    /// <summary>The network namespace cairnd runs in.</summary>
    public string Namespace { get; }

    /// <summary>The node's address on the bridge; the test process reaches it from the root namespace.</summary>
    public string Ip { get; }

    /// <summary>The bridge side of the node's veth pair (in the hub namespace); down = the node is cut off from everything.</summary>
    internal string HubLink { get; }

    public string DataDirectory { get; }

    /// <summary>The --pool argument: PATH[:SIZE].</summary>
    public string PoolSpec { get; }

    public string ApiUrl => $"http://{Ip}:{ApiPort}";

    public string NbdUri(string export) => $"nbd://{Ip}:{NbdPort}/{export}";

    internal NamespacedProcess? Process { get; set; }

    public bool IsRunning => Process is { IsRunning: true };

    /// <summary>cairnd's log file (every start appends).</summary>
    public string LogPath => Path.Combine(DataDirectory, "cairnd.log");

    public string LogTail() => Process?.Tail() ?? "";

    public override string ToString() => $"{Name} ({Ip}, netns {Namespace})";
}

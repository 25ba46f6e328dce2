namespace Cairn.Testing;

/// <summary>
/// Cutting links. A whole node goes dark by taking its veth down on the bridge side (packets vanish, nothing answers,
/// as with a pulled cable). A single pair of addresses is cut without a firewall (this kernel has no netem and the
/// machine no iptables/nft): each side gets a permanent neighbour entry mapping the other's address to a MAC no one
/// has, so its frames are flooded by the bridge and dropped by every port — silent loss both ways, while every other
/// link of both namespaces keeps working.
/// </summary>
public sealed partial class NetnsCluster
{
    private const string NowhereMac = "02:00:5e:de:ad:01";
    private readonly HashSet<(string Namespace, string Device, string Ip)> _blackholes = [];
    private readonly HashSet<NetnsNode> _isolated = [];

    /// <summary>Cuts every link of the node, also to the test process: its NBD clients and API calls hang, as in a real partition.</summary>
    public async Task IsolateAsync(NetnsNode node)
    {
        Log($"isolate {node.Name} from everything");
        await Ip("-n", HubNamespace, "link", "set", node.HubLink, "down");
        _isolated.Add(node);
    }

    /// <summary>Cuts node ↔ etcd only: it loses its lease and cannot prove anything, but peers and clients still reach it.</summary>
    public async Task CutFromEtcdAsync(NetnsNode node)
    {
        Log($"cut {node.Name} from etcd");
        await CutPairAsync(node.Namespace, "eth0", node.Ip, HubNamespace, "br0", EtcdIp);
    }

    /// <summary>Cuts node ↔ every other node only: etcd and clients still reach it.</summary>
    public async Task CutFromPeersAsync(NetnsNode node)
    {
        Log($"cut {node.Name} from its peers");
        foreach (var peer in _nodes.Where(n => n != node))
        {
            await CutPairAsync(node.Namespace, "eth0", node.Ip, peer.Namespace, "eth0", peer.Ip);
        }
    }

    /// <summary>Cuts node ↔ etcd and node ↔ peers; only clients (the test process) still reach it — the case where an old owner must stop acknowledging.</summary>
    public async Task CutFromClusterAsync(NetnsNode node)
    {
        await CutFromEtcdAsync(node);
        await CutFromPeersAsync(node);
    }

    /// <summary>Undoes every cut that involves the node (its veth up again, its blackholed neighbours and theirs removed).</summary>
    public async Task HealAsync(NetnsNode node)
    {
        Log($"heal {node.Name}");
        if (_isolated.Remove(node))
        {
            await Ip("-n", HubNamespace, "link", "set", node.HubLink, "up");
        }
        foreach (var entry in _blackholes.Where(b => b.Namespace == node.Namespace || b.Ip == node.Ip).ToList())
        {
            await HostCommand.TryAsync("ip", "-n", entry.Namespace, "neigh", "del", entry.Ip, "dev", entry.Device);
            _blackholes.Remove(entry);
        }
    }

    /// <summary>Heals every node.</summary>
    public async Task HealAllAsync()
    {
        foreach (var node in _nodes)
        {
            await HealAsync(node);
        }
    }

    private async Task CutPairAsync(string nsA, string devA, string ipA, string nsB, string devB, string ipB)
    {
        await BlackholeAsync(nsA, devA, ipB);
        await BlackholeAsync(nsB, devB, ipA);
    }

    private async Task BlackholeAsync(string ns, string device, string ip)
    {
        await Ip("-n", ns, "neigh", "replace", ip, "lladdr", NowhereMac, "dev", device, "nud", "permanent");
        _blackholes.Add((ns, device, ip));
    }
}

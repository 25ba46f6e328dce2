namespace Cairn.ControlPlane;

/// <summary>Where the control plane keeps its state in the cluster store. One place, so no two components disagree.</summary>
public static class ClusterKeys
{
    /// <summary>Volume specs, cluster-wide: <c>/cairn/volumes/NAME</c>.</summary>
    public const string Volumes = "/cairn/volumes/";

    /// <summary>Live node records, attached to each node's heartbeat lease: present exactly while the node is Up.</summary>
    public const string Nodes = "/cairn/nodes/";

    /// <summary>Every node that ever joined, without a lease: static facts and the admin's Draining flag. Down nodes still list.</summary>
    public const string NodeRegistry = "/cairn/node-registry/";

    /// <summary>The elected controller's key, attached to its lease.</summary>
    public const string ControllerLeader = "/cairn/controller/leader";

    /// <summary>Each volume's health as the controller last judged it: <c>/cairn/volume-health/NAME</c>, written only by the leader, fenced by its term.</summary>
    public const string VolumeHealth = "/cairn/volume-health/";

    public static string Node(string name) => Nodes + name;

    public static string Health(string volume) => VolumeHealth + volume;

    public static string Registration(string name) => NodeRegistry + name;
}

namespace Cairn.ClusterStore;

/// <summary>Opens the cluster store a spec names: <c>etcd://host1:2379,host2:2379</c> for etcd, anything else is the embedded store's directory.</summary>
public static class ClusterStoreFactory
{
    public const string EtcdScheme = "etcd://";

    private const int DefaultEtcdPort = 2379;

    public static IClusterStore Open(string spec, EmbeddedClusterStoreOptions? embedded = null, EtcdClusterStoreOptions? etcd = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(spec);
        return IsEtcd(spec)
            ? new EtcdClusterStore(ParseEtcdEndpoints(spec), etcd)
            : EmbeddedClusterStore.Open(spec, embedded);
    }

    public static bool IsEtcd(string spec) => spec.StartsWith(EtcdScheme, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// <c>etcd://h1:2379,h2,[::1]:2379</c> → <c>http://h1:2379/</c>, <c>http://h2:2379/</c>, <c>http://[::1]:2379/</c>.
    /// An entry may also be a full <c>http://</c> or <c>https://</c> URL.
    /// </summary>
    public static IReadOnlyList<Uri> ParseEtcdEndpoints(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (!IsEtcd(spec))
        {
            throw new FormatException($"'{spec}' is not an etcd spec; expected {EtcdScheme}host:port[,host:port...]");
        }
        var endpoints = new List<Uri>();
        foreach (string part in spec[EtcdScheme.Length..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string text = part.Contains("://", StringComparison.Ordinal) ? part : "http://" + part.TrimEnd('/');
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Host.Length == 0
                || uri.AbsolutePath != "/" || !string.IsNullOrEmpty(uri.Query))
            {
                throw new FormatException($"'{part}' in '{spec}' is not an etcd endpoint; expected host:port");
            }
            if (!part.Contains("://", StringComparison.Ordinal) && uri.IsDefaultPort)
            {
                uri = new UriBuilder(uri) { Port = DefaultEtcdPort }.Uri; // "etcd://h1" means etcd's port, not HTTP's 80
            }
            if (!endpoints.Contains(uri))
            {
                endpoints.Add(uri);
            }
        }
        if (endpoints.Count == 0)
        {
            throw new FormatException($"'{spec}' names no etcd endpoint; expected {EtcdScheme}host:port[,host:port...]");
        }
        return endpoints;
    }
}

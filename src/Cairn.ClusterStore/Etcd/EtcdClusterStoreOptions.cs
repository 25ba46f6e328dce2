using Microsoft.Extensions.Logging;

namespace Cairn.ClusterStore;

public sealed class EtcdClusterStoreOptions
{
    /// <summary>How long a TCP connect to one endpoint may take before the next endpoint is tried.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Deadline for one request to one endpoint (connect, send, answer); a watch's creation counts as a request.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a broken watch keeps trying to reconnect (over all endpoints, with backoff) before it throws
    /// <see cref="ClusterStoreUnavailableException"/>. Within this window it resumes with no event lost.
    /// </summary>
    public TimeSpan WatchReconnectTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public ILogger? Logger { get; init; }
}

namespace Cairn.Core.Transport;

/// <summary>
/// The process's IO threads: one <see cref="EpollLoopGroup"/> that every frontend and replica connection shares, one
/// thread per core unless <see cref="Configure"/> says otherwise. An owner's client connection and its links to the
/// replicas then share a thread whenever they land on the same one (always with one IO thread): a write's request, its
/// local write, its sends to the replicas, their replies and the reply to the client are handled in the batches of one
/// thread, instead of waking a second thread for every batch of replica replies (the owner then spent 15-30% less
/// CPU per 3-replica write; see src/Cairn.Replication/README.md). The threads live as long as the process.
/// </summary>
public static class IoThreads
{
    private static readonly Lock Gate = new();
    private static EpollLoopGroup? _group;
    private static int _count;
    private static bool _created;

    /// <summary>The shared group, started on first use; null where the epoll transport is not supported (use <see cref="SocketTransport"/>).</summary>
    public static EpollLoopGroup? Group
    {
        get
        {
            lock (Gate)
            {
                if (!_created)
                {
                    _group = EpollLoop.IsSupported ? new EpollLoopGroup("cairn", e => Console.Error.WriteLine($"cairn: IO thread: {e}"), _count) : null;
                    _created = true;
                }
                return _group;
            }
        }
    }

    /// <summary>Sets the number of IO threads (0: one per core) before the first connection; afterwards only the count in use is accepted.</summary>
    public static void Configure(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, 1024);
        lock (Gate)
        {
            if (_created && count != _count)
            {
                throw new InvalidOperationException($"the IO threads already run ({(_count == 0 ? "one per core" : _count.ToString(System.Globalization.CultureInfo.InvariantCulture))}); set their count before the first connection");
            }
            _count = count;
        }
    }
}

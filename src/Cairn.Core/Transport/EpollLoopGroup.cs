using System.Net.Sockets;

namespace Cairn.Core.Transport;

/// <summary>
/// The IO threads a server's (or a client's) connections are spread over: one <see cref="EpollLoop"/> per core, each
/// connection on one of them, chosen round-robin. Disposing stops the threads (safe from a continuation on one of them,
/// which is not waited for); close the connections first.
/// </summary>
public sealed class EpollLoopGroup : IDisposable
{
    private EpollLoop[] _loops;
    private int _next;

    /// <param name="name">Names the IO threads ("NAME-io-INDEX").</param>
    /// <param name="onError">Told about exceptions a continuation threw on an IO thread (the thread carries on).</param>
    public EpollLoopGroup(string name, Action<Exception> onError, int count = 0)
    {
        if (!EpollLoop.IsSupported)
        {
            throw new PlatformNotSupportedException("the epoll transport needs Linux x86-64; use SocketTransport elsewhere");
        }
        _loops = new EpollLoop[count > 0 ? count : Math.Max(1, Environment.ProcessorCount)];
        for (int i = 0; i < _loops.Length; i++)
        {
            _loops[i] = new EpollLoop(name, i, onError);
        }
    }

    /// <summary>Serves <paramref name="socket"/> (connected, never used for async IO by .NET) on the next IO thread; throws <see cref="IOException"/> if it cannot be registered.</summary>
    public EpollTransport Open(Socket socket) =>
        new(socket, _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)]);

    public void Dispose()
    {
        foreach (var loop in Interlocked.Exchange(ref _loops, []))
        {
            loop.Dispose();
        }
    }
}

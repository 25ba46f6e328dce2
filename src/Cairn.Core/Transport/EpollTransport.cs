using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using static Cairn.Core.Transport.EpollInterop;

namespace Cairn.Core.Transport;

/// <summary>
/// An IO thread with its own edge-triggered epoll set. Connections are spread over a few of these (one per core,
/// never one per connection; see <see cref="EpollLoopGroup"/>); a connection's receive loop continues inline on the IO
/// thread when its socket becomes readable, without the hop to the thread pool that .NET's sockets make (which
/// measured 3x the CPU per IO for NBD).
/// </summary>
public sealed unsafe class EpollLoop : IDisposable
{
    private const int MaxEventsPerWait = 256;
    private readonly int _epollFd;
    private readonly int _wakeFd;
    private readonly Thread _thread;
    private readonly ConcurrentDictionary<int, EpollTransport> _transports = new();
    private readonly Action<Exception> _onError;
    private volatile bool _stopping;
    private int _disposed;
    /// <summary>Set by a <see cref="Dispose"/> that ran on this loop's own thread: the thread closes the descriptors as it exits.</summary>
    private bool _closeOnExit;

    /// <summary>Whether this platform has the transport (Linux x86-64); elsewhere use <see cref="SocketTransport"/>.</summary>
    public static bool IsSupported => EpollInterop.IsSupported;

    /// <param name="name">Names the IO thread ("NAME-io-INDEX"), e.g. nbd.</param>
    public EpollLoop(string name, int index, Action<Exception> onError)
    {
        _onError = onError;
        _epollFd = EpollCreate1(CloExec);
        if (_epollFd < 0)
        {
            throw new IOException($"epoll_create1 failed with errno {Marshal.GetLastPInvokeError()}");
        }
        _wakeFd = EventFd(0, CloExec | NonBlock);
        var ev = new EpollEvent { Events = EpollIn, Data = (ulong)_wakeFd };
        if (_wakeFd < 0 || EpollCtl(_epollFd, CtlAdd, _wakeFd, &ev) != 0)
        {
            throw new IOException($"eventfd setup failed with errno {Marshal.GetLastPInvokeError()}");
        }
        _thread = new Thread(Run) { IsBackground = true, Name = $"{name}-io-{index}" };
        _thread.Start();
    }

    internal void Register(EpollTransport transport)
    {
        _transports[transport.Fd] = transport;
        var ev = new EpollEvent { Events = EpollIn | EpollOut | EpollRdHup | EpollEt, Data = (ulong)transport.Fd };
        if (EpollCtl(_epollFd, CtlAdd, transport.Fd, &ev) != 0)
        {
            _transports.TryRemove(new KeyValuePair<int, EpollTransport>(transport.Fd, transport));
            throw new IOException($"epoll_ctl(ADD) failed with errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Called before the socket is closed, so a reused descriptor number never reaches the old transport.</summary>
    internal void Unregister(EpollTransport transport)
    {
        EpollCtl(_epollFd, CtlDel, transport.Fd, null);
        _transports.TryRemove(new KeyValuePair<int, EpollTransport>(transport.Fd, transport));
    }

    /// <summary>Work deferred to the end of the current batch of events; set on IO threads only.</summary>
    [ThreadStatic]
    private static Queue<IThreadPoolWorkItem>? t_deferred;

    /// <summary>
    /// On an IO thread: runs <paramref name="work"/> once this thread has handled every event of its current wait, before
    /// it waits again. A connection that queues a frame for each of a burst of requests parsed in one receive can so send
    /// them all with one write after the burst, without waking another thread. False (nothing queued) on other threads.
    /// </summary>
    public static bool TryDeferToEndOfBatch(IThreadPoolWorkItem work)
    {
        if (t_deferred is not { } deferred)
        {
            return false;
        }
        deferred.Enqueue(work);
        return true;
    }

    private void Run()
    {
        var events = stackalloc EpollEvent[MaxEventsPerWait];
        var deferred = t_deferred = new Queue<IThreadPoolWorkItem>(64);
        try
        {
            Wait(events);
        }
        finally
        {
            RunDeferred(deferred); // work deferred by the last events must still run, or its connection stalls
            t_deferred = null;
            if (_closeOnExit)
            {
                CloseDescriptors();
            }
        }
    }

    private void Wait(EpollEvent* events)
    {
        var deferred = t_deferred!;
        while (!_stopping)
        {
            int n = EpollWait(_epollFd, events, MaxEventsPerWait, -1);
            if (n < 0)
            {
                if (Marshal.GetLastPInvokeError() == EIntr)
                {
                    continue;
                }
                _onError(new IOException($"epoll_wait failed with errno {Marshal.GetLastPInvokeError()}"));
                return;
            }
            for (int i = 0; i < n; i++)
            {
                int fd = (int)events[i].Data;
                if (fd == _wakeFd)
                {
                    long drained;
                    Read(_wakeFd, (byte*)&drained, sizeof(long));
                    continue;
                }
                if (_transports.TryGetValue(fd, out var transport))
                {
                    try
                    {
                        transport.OnEvents(events[i].Events);
                    }
                    catch (Exception e)
                    {
                        // A continuation that throws must not take the IO thread (and every connection on it) down.
                        _onError(e);
                    }
                }
            }
            RunDeferred(deferred);
        }
    }

    private void RunDeferred(Queue<IThreadPoolWorkItem> deferred)
    {
        while (deferred.TryDequeue(out var work))
        {
            try
            {
                work.Execute();
            }
            catch (Exception e)
            {
                _onError(e);
            }
        }
    }

    /// <summary>
    /// Stops the IO thread once its current batch of events (and the work deferred by it) is done, and closes the epoll
    /// set. From another thread it waits for that; from a continuation running on this loop's own thread (where an
    /// awaited IO completes, so an owner's cleanup can end up here) it cannot wait for itself, and returns at once.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return; // a second close could hit a descriptor number already reused elsewhere in the process
        }
        _stopping = true;
        if (Thread.CurrentThread == _thread)
        {
            // Joining here would wait forever. The loop sees _stopping after this batch; no wake-up is needed, and the
            // descriptors are closed by this thread as it leaves, after its last use of them.
            _closeOnExit = true;
            return;
        }
        long one = 1;
        Write(_wakeFd, (byte*)&one, sizeof(long));
        _thread.Join();
        CloseDescriptors();
    }

    private void CloseDescriptors()
    {
        EpollInterop.Close(_wakeFd);
        EpollInterop.Close(_epollFd);
    }
}

/// <summary>
/// Non-blocking recv/send on the socket's descriptor; an operation that would block parks until the IO thread sees
/// the socket ready and finishes it there. The socket never touches .NET's own epoll engine, so no thread-pool hop.
/// </summary>
public sealed unsafe class EpollTransport : ISocketTransport
{
    private readonly Socket _socket;
    private readonly EpollLoop _loop;
    private readonly Waiter _receiver = new(isSend: false);
    private readonly Waiter _sender = new(isSend: true);
    private int _closed;

    public EpollTransport(Socket socket, EpollLoop loop)
    {
        _socket = socket;
        _loop = loop;
        Fd = (int)socket.SafeHandle.DangerousGetHandle();
        loop.Register(this);
    }

    internal int Fd { get; }

    public ValueTask<int> ReceiveAsync(Memory<byte> buffer) => Start(_receiver, buffer);

    public ValueTask<int> SendAsync(ReadOnlyMemory<byte> data) => Start(_sender, MemoryMarshal.AsMemory(data));

    private ValueTask<int> Start(Waiter waiter, Memory<byte> buffer)
    {
        while (true)
        {
            int readySequence = Volatile.Read(ref waiter.ReadySequence);
            int n = waiter.Attempt(_socket, buffer.Span, out int errno);
            if (n >= 0)
            {
                return new ValueTask<int>(n);
            }
            if (errno != EAgain && errno != EIntr)
            {
                return ValueTask.FromException<int>(Failure(waiter, errno));
            }
            waiter.Park(buffer);
            // The socket may have become ready between the attempt and parking; its edge would then be lost to us.
            if (Volatile.Read(ref waiter.ReadySequence) != readySequence || Volatile.Read(ref _closed) != 0)
            {
                if (waiter.TryUnpark())
                {
                    if (Volatile.Read(ref _closed) != 0)
                    {
                        return ValueTask.FromException<int>(new ObjectDisposedException(nameof(EpollTransport)));
                    }
                    continue;
                }
                // The IO thread (or Close) claimed it and completes it.
            }
            return waiter.Task;
        }
    }

    /// <summary>On the IO thread: the socket became readable and/or writable (or hung up).</summary>
    internal void OnEvents(uint events)
    {
        if ((events & (EpollIn | EpollRdHup | EpollHup | EpollErr)) != 0)
        {
            Interlocked.Increment(ref _receiver.ReadySequence);
            Finish(_receiver);
        }
        if ((events & (EpollOut | EpollHup | EpollErr)) != 0)
        {
            Interlocked.Increment(ref _sender.ReadySequence);
            Finish(_sender);
        }
    }

    private void Finish(Waiter waiter)
    {
        if (!waiter.TryUnpark())
        {
            return;
        }
        int n;
        int errno;
        try
        {
            n = waiter.Attempt(_socket, waiter.Buffer.Span, out errno);
        }
        catch (ObjectDisposedException e)
        {
            waiter.Fail(e);
            return;
        }
        if (n >= 0)
        {
            waiter.Succeed(n);
        }
        else if (errno == EAgain || errno == EIntr)
        {
            // Spurious: park again; the next edge arrives through epoll_wait on this same thread.
            waiter.Repark();
        }
        else
        {
            waiter.Fail(Failure(waiter, errno));
        }
    }

    private static IOException Failure(Waiter waiter, int errno) =>
        new($"{(waiter.IsSend ? "send" : "recv")} failed with errno {errno}", new SocketException(errno));

    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception)
        {
            // Already gone.
        }
        _loop.Unregister(this);
        foreach (var waiter in new[] { _receiver, _sender })
        {
            if (waiter.TryUnpark())
            {
                waiter.Fail(new ObjectDisposedException(nameof(EpollTransport), "connection closed"));
            }
        }
        _socket.Dispose();
    }

    /// <summary>One direction's parked operation. Continuations run synchronously: on the IO thread, which is the point.</summary>
    private sealed class Waiter(bool isSend) : IValueTaskSource<int>
    {
        private ManualResetValueTaskSourceCore<int> _core = new() { RunContinuationsAsynchronously = false };
        private int _parked;
        public int ReadySequence;

        public bool IsSend { get; } = isSend;
        public Memory<byte> Buffer { get; private set; }
        public ValueTask<int> Task => new(this, _core.Version);

        /// <summary>One non-blocking syscall; the handle is referenced so a concurrent Dispose cannot close (and reuse) the descriptor under it.</summary>
        public int Attempt(Socket socket, Span<byte> span, out int errno)
        {
            var handle = socket.SafeHandle;
            bool added = false;
            handle.DangerousAddRef(ref added);
            try
            {
                int fd = (int)handle.DangerousGetHandle();
                nint n;
                fixed (byte* p = span)
                {
                    n = IsSend
                        ? EpollInterop.Send(fd, p, span.Length, MsgDontWait | MsgNoSignal)
                        : Recv(fd, p, span.Length, MsgDontWait);
                }
                errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
                return (int)n;
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }
        }

        public void Park(Memory<byte> buffer)
        {
            _core.Reset();
            Buffer = buffer;
            Volatile.Write(ref _parked, 1);
        }

        public void Repark() => Volatile.Write(ref _parked, 1);

        public bool TryUnpark() => Interlocked.Exchange(ref _parked, 0) == 1;

        public void Succeed(int n)
        {
            Buffer = default;
            _core.SetResult(n);
        }

        public void Fail(Exception e)
        {
            Buffer = default;
            _core.SetException(e);
        }

        public int GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}

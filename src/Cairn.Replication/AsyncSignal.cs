using System.Threading.Tasks.Sources;

namespace Cairn.Replication;

/// <summary>
/// An auto-reset event for one waiter, awaitable without allocating: any thread may <see cref="Set"/> it; the single
/// waiter's <see cref="WaitAsync"/> completes at once if it was set since the last wait, otherwise at the next set.
/// </summary>
internal sealed class AsyncSignal : IValueTaskSource
{
    private const int Idle = 0;
    private const int Signalled = 1;
    private const int Waiting = 2;

    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
    private int _state;

    public void Set()
    {
        while (true)
        {
            switch (Volatile.Read(ref _state))
            {
                case Signalled:
                    return;
                case Idle when Interlocked.CompareExchange(ref _state, Signalled, Idle) == Idle:
                    return;
                case Waiting when Interlocked.CompareExchange(ref _state, Idle, Waiting) == Waiting:
                    _core.SetResult(true);
                    return;
            }
        }
    }

    /// <summary>Waits for the next <see cref="Set"/> (or consumes one that came since the last wait). One waiter at a time.</summary>
    public ValueTask WaitAsync()
    {
        if (Interlocked.CompareExchange(ref _state, Idle, Signalled) == Signalled)
        {
            return ValueTask.CompletedTask;
        }
        _core.Reset(); // before publishing Waiting: only a setter that sees Waiting completes the core
        if (Interlocked.CompareExchange(ref _state, Waiting, Idle) != Idle)
        {
            Volatile.Write(ref _state, Idle); // set in between: consume it
            return ValueTask.CompletedTask;
        }
        return new ValueTask(this, _core.Version);
    }

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// The simulation's only clock and only thread. Events run one at a time in (time, sequence) order; the code under
/// test sees this as its <see cref="SynchronizationContext"/>, so every <c>await</c> continuation is posted back here
/// instead of to the thread pool. Nothing sleeps: time jumps to the next event. Everything random comes from
/// <see cref="Rng"/>, so a seed fixes the whole run, and <see cref="TraceHash"/> (every event's time and sequence,
/// and every trace line) proves it: the same seed must give the same hash.
/// </summary>
internal sealed class SimScheduler : SynchronizationContext
{
    /// <summary>A run that is still busy after this many events is live-locked: fail rather than spin.</summary>
    private const long MaxEvents = 5_000_000;

    private readonly PriorityQueue<(SendOrPostCallback Callback, object? State), (long TimeUs, long Sequence)> _queue = new();
    private readonly int _loopThread = Environment.CurrentManagedThreadId;
    private readonly Action<string>? _trace;
    private long _sequence;
    private long _events;
    private ulong _hash = 14695981039346656037UL;

    public SimScheduler(int seed, Action<string>? trace)
    {
        Rng = new Random(seed);
        _trace = trace;
    }

    public Random Rng { get; }

    public long NowUs { get; private set; }

    public bool Tracing => _trace is not null;

    public ulong TraceHash => _hash;

    public long Events => _events;

    private string? _escaped;

    /// <summary>Set when something posted from another thread: work escaped the simulation (thread pool, real timer).</summary>
    public string? Escaped => Volatile.Read(ref _escaped);

    public override void Post(SendOrPostCallback d, object? state)
    {
        if (Environment.CurrentManagedThreadId != _loopThread)
        {
            // Not queued: running it would make the run depend on real thread timing. The loop fails at its next event.
            Interlocked.CompareExchange(ref _escaped,
                $"a continuation was posted from thread {Environment.CurrentManagedThreadId}, not the simulation loop: {Environment.StackTrace}", null);
            return;
        }
        _queue.Enqueue((d, state), (NowUs, _sequence++));
    }

    public override void Send(SendOrPostCallback d, object? state) =>
        throw new NotSupportedException("the simulation never blocks a thread on another");

    public override SynchronizationContext CreateCopy() => this;

    /// <summary>Runs <paramref name="action"/> <paramref name="delayUs"/> from now.</summary>
    public void At(long delayUs, Action action)
    {
        if (delayUs < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(delayUs), delayUs, "events cannot be scheduled in the past");
        }
        _queue.Enqueue((static s => ((Action)s!)(), action), (NowUs + delayUs, _sequence++));
    }

    /// <summary>Simulated sleep: completes on the loop after <paramref name="delayUs"/>.</summary>
    public Task Delay(long delayUs)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        At(delayUs, () => done.SetResult());
        return done.Task;
    }

    /// <summary>Starts an asynchronous flow on the loop (never inline, so callers keep their order).</summary>
    public void Spawn(Func<Task> flow, Action<Exception> onFault)
    {
        At(0, () =>
        {
            var task = flow();
            task.ContinueWith(t => onFault(t.Exception!.GetBaseException()), CancellationToken.None,
                TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.FromCurrentSynchronizationContext());
        });
    }

    /// <summary>Runs events until none is left or simulated time passes <paramref name="untilUs"/>.</summary>
    public void RunUntil(long untilUs)
    {
        var previous = Current;
        SetSynchronizationContext(this);
        try
        {
            while (_queue.TryPeek(out _, out var at) && at.TimeUs <= untilUs)
            {
                var (callback, state) = _queue.Dequeue();
                NowUs = at.TimeUs;
                Mix((ulong)at.TimeUs);
                Mix((ulong)at.Sequence);
                if (++_events > MaxEvents)
                {
                    throw new InvalidOperationException($"more than {MaxEvents} events by {NowUs} µs: the simulation is live-locked");
                }
                callback(state);
                if (Escaped is { } escaped)
                {
                    throw new InvalidOperationException(escaped);
                }
            }
            NowUs = Math.Max(NowUs, untilUs);
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }

    /// <summary>Records one line of the run: always hashed, printed only when replaying with a trace.</summary>
    public void Trace(string line)
    {
        foreach (char c in line)
        {
            Mix(c);
        }
        _trace?.Invoke($"{NowUs / 1000.0,10:F3} ms  {line}");
    }

    /// <summary>A lazily formatted trace line, for the busy paths (messages): hashed only as a tag when nobody reads it.</summary>
    public void TraceDetail(int tag, Func<string> line)
    {
        Mix((ulong)tag);
        if (_trace is not null)
        {
            _trace($"{NowUs / 1000.0,10:F3} ms    {line()}");
        }
    }

    private void Mix(ulong value)
    {
        _hash ^= value;
        _hash *= 1099511628211UL;
    }
}

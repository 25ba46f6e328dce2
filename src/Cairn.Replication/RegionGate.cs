namespace Cairn.Replication;

/// <summary>
/// Keeps a rebuild's copier and live changes apart on the same bytes. Live changes hold their range shared for their
/// whole local and remote duration; the copier holds one window at a time exclusively while it reads the owner's
/// data and writes it to the replica. So the copier never reads a region a live change is still writing, and never
/// sends data it read before a live change that then reaches the replica first: the replica cannot end up older than
/// the owner. Fair both ways: a copier waiting for a window stops new overlapping changes from entering, and changes
/// that waited for the copier enter before it takes its next window. Only used while a rebuild runs.
/// </summary>
internal sealed class RegionGate
{
    private readonly Lock _lock = new();
    private readonly List<(long Start, long End)> _live = [];
    private bool _copying;
    private long _copyStart;
    private long _copyEnd;
    private int _blocking;  // live ranges overlapping the copier's window that have not left yet
    private int _waiting;   // live changes waiting for the copier to leave its window
    private TaskCompletionSource? _windowFree;   // the copier waits: no live change left in its window
    private TaskCompletionSource? _copierLeft;   // live changes wait: the copier left its window
    private TaskCompletionSource? _waitersIn;    // the copier waits: every change that waited for it has entered

    /// <summary>Enters [<paramref name="start"/>, <paramref name="end"/>) shared; completes at once unless the copier holds an overlapping window.</summary>
    public ValueTask EnterLiveAsync(long start, long end)
    {
        lock (_lock)
        {
            if (!_copying || !Overlaps(start, end))
            {
                _live.Add((start, end));
                return ValueTask.CompletedTask;
            }
            _waiting++;
            _copierLeft ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return EnterAfterCopierAsync(_copierLeft.Task, start, end);
        }
    }

    private async ValueTask EnterAfterCopierAsync(Task copierLeft, long start, long end)
    {
        while (true)
        {
            await copierLeft;
            lock (_lock)
            {
                // The copier takes no new window while anyone still waits, so this normally enters at once.
                if (!_copying || !Overlaps(start, end))
                {
                    _live.Add((start, end));
                    if (--_waiting == 0 && _waitersIn is { } waitersIn)
                    {
                        _waitersIn = null;
                        waitersIn.TrySetResult();
                    }
                    return;
                }
                _copierLeft ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                copierLeft = _copierLeft.Task;
            }
        }
    }

    public void ExitLive(long start, long end)
    {
        TaskCompletionSource? windowFree = null;
        lock (_lock)
        {
            _live.Remove((start, end));
            // A live range overlapping the copier's window entered before the copier took it (later ones wait), so it was counted.
            if (_copying && Overlaps(start, end) && --_blocking == 0)
            {
                (windowFree, _windowFree) = (_windowFree, null);
            }
        }
        windowFree?.TrySetResult();
    }

    /// <summary>Takes [<paramref name="start"/>, <paramref name="end"/>) exclusively, once the live changes in it have left.</summary>
    public async ValueTask EnterCopyAsync(long start, long end, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_lock)
            {
                if (_waiting > 0)
                {
                    _waitersIn ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _waitersIn.Task;
                }
                else
                {
                    (_copying, _copyStart, _copyEnd) = (true, start, end);
                    _blocking = _live.Count(r => Overlaps(r.Start, r.End));
                    if (_blocking == 0)
                    {
                        return;
                    }
                    _windowFree = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _windowFree.Task;
                }
            }
            try
            {
                await wait.WaitAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                ExitCopy();
                throw;
            }
            lock (_lock)
            {
                if (_copying && _blocking == 0)
                {
                    return;
                }
            }
        }
    }

    public void ExitCopy()
    {
        TaskCompletionSource? copierLeft;
        lock (_lock)
        {
            _copying = false;
            _blocking = 0;
            _windowFree = null;
            (copierLeft, _copierLeft) = (_copierLeft, null);
        }
        copierLeft?.TrySetResult();
    }

    private bool Overlaps(long start, long end) => start < _copyEnd && _copyStart < end;
}

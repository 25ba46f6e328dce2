using System.Runtime.CompilerServices;
using Cairn.Core;

namespace Cairn.Testing;

/// <summary>
/// A RAM-backed test double for a volume: tracks allocation per 4 KiB page (hole, data, zero) so block status,
/// trim and write-zeroes are observable, and can inject faults or complete asynchronously.
/// </summary>
public sealed class RamBlockDevice : IBlockDevice
{
    public const int PageBytes = 4096;
    private readonly byte[] _data;
    private readonly AllocationState[] _pages;
    private int _flushes;
    private int _fuaWrites;
    private long _uncachedBytes;
    private long _allocationPagesWalked;
    private int _inFlight;
    private int _maxInFlight;

    public RamBlockDevice(long sizeBytes, bool readOnly = false)
    {
        _data = new byte[sizeBytes];
        _pages = new AllocationState[(sizeBytes + PageBytes - 1) / PageBytes];
        Array.Fill(_pages, AllocationState.Hole);
        IsReadOnly = readOnly;
    }

    public long SizeBytes => _data.LongLength;
    public int PreferredBlockSizeBytes => PageBytes;
    public bool IsReadOnly { get; }

    /// <summary>When set, every operation completes asynchronously (after a yield), as a replicated volume would.</summary>
    public bool Asynchronous { get; set; }

    public bool FastZeroSupported { get; set; } = true;

    /// <summary>Returns an error to throw for an operation ("read", "write", ...) at an offset, or null to succeed.</summary>
    public Func<string, long, BlockError?>? Fault { get; set; }

    /// <summary>The most asynchronous operations that were ever pending at once.</summary>
    public int MaxConcurrentSeen => Volatile.Read(ref _maxInFlight);

    public int Flushes => Volatile.Read(ref _flushes);
    public int FuaWrites => Volatile.Read(ref _fuaWrites);
    /// <summary>Bytes written with <see cref="WriteFlags.Uncached"/> (a rebuild's copy).</summary>
    public long UncachedBytes => Interlocked.Read(ref _uncachedBytes);
    /// <summary>Pages <see cref="GetAllocationAsync"/> looked at, over all calls: what a block store's lookups would walk.</summary>
    public long AllocationPagesWalked => Interlocked.Read(ref _allocationPagesWalked);
    public Span<byte> Data => _data;

    public AllocationState PageState(long offset) => _pages[offset / PageBytes];

    // Each operation checks, then runs inline (no closure, so the server's allocation profile is not polluted)
    // or, when Asynchronous, later through a closure, as a replicated volume would complete.
    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        if (Check("read", offset, destination.Length) is { } failed)
        {
            return ValueTask.FromException(failed);
        }
        if (Asynchronous)
        {
            return ReadLaterAsync(offset, destination);
        }
        DoRead(offset, destination.Span);
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if (Check("write", offset, source.Length) is { } failed)
        {
            return ValueTask.FromException(failed);
        }
        if (Asynchronous)
        {
            return WriteLaterAsync(offset, source, flags);
        }
        DoWrite(offset, source.Span, flags);
        return ValueTask.CompletedTask;
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        if (Check("flush", 0, 0) is { } failed)
        {
            return ValueTask.FromException(failed);
        }
        return Asynchronous ? FlushLaterAsync() : Done(Interlocked.Increment(ref _flushes));
    }

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if (Check("trim", offset, length) is { } failed)
        {
            return ValueTask.FromException(failed);
        }
        return Asynchronous ? ZeroLaterAsync(offset, length, AllocationState.Hole) : Done(DoZero(offset, length, AllocationState.Hole));
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if ((zeroFlags & ZeroFlags.FastOnly) != 0 && !FastZeroSupported)
        {
            return ValueTask.FromException(new BlockDeviceException(BlockError.NotSupported, "fast zero not supported"));
        }
        if (Check("zero", offset, length) is { } failed)
        {
            return ValueTask.FromException(failed);
        }
        var state = (zeroFlags & ZeroFlags.NoHole) != 0 ? AllocationState.Zero : AllocationState.Hole;
        return Asynchronous ? ZeroLaterAsync(offset, length, state) : Done(DoZero(offset, length, state));
    }

    private void DoRead(long offset, Span<byte> destination) => _data.AsSpan((int)offset, destination.Length).CopyTo(destination);

    private void DoWrite(long offset, ReadOnlySpan<byte> source, WriteFlags flags)
    {
        source.CopyTo(_data.AsSpan((int)offset));
        MarkPages(offset, source.Length, AllocationState.Data, wholePagesOnly: false);
        if ((flags & WriteFlags.ForceUnitAccess) != 0)
        {
            Interlocked.Increment(ref _fuaWrites);
        }
        if ((flags & WriteFlags.Uncached) != 0)
        {
            Interlocked.Add(ref _uncachedBytes, source.Length);
        }
    }

    private int DoZero(long offset, long length, AllocationState state)
    {
        _data.AsSpan((int)offset, (int)length).Clear();
        MarkPages(offset, length, state, wholePagesOnly: true);
        return 0;
    }

    private static ValueTask Done(int ignored) => ValueTask.CompletedTask;

    public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
    {
        int count = 0;
        long at = offset;
        long end = Math.Min(offset + length, SizeBytes);
        var span = extents.Span;
        while (at < end && count < span.Length)
        {
            var state = _pages[at / PageBytes];
            long runEnd = at;
            while (runEnd < end && _pages[runEnd / PageBytes] == state)
            {
                runEnd = (runEnd / PageBytes + 1) * PageBytes;
                Interlocked.Increment(ref _allocationPagesWalked);
            }
            runEnd = Math.Min(runEnd, end);
            span[count++] = new AllocationExtent(runEnd - at, state);
            at = runEnd;
        }
        return ValueTask.FromResult(count);
    }

    private void MarkPages(long offset, long length, AllocationState state, bool wholePagesOnly)
    {
        long first = wholePagesOnly ? (offset + PageBytes - 1) / PageBytes : offset / PageBytes;
        long last = wholePagesOnly ? (offset + length) / PageBytes : (offset + length + PageBytes - 1) / PageBytes;
        for (long p = first; p < last; p++)
        {
            _pages[p] = state;
        }
    }

    private BlockDeviceException? Check(string operation, long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > SizeBytes)
        {
            return new BlockDeviceException(BlockError.InvalidArgument, "range outside the device");
        }
        if (IsReadOnly && operation is "write" or "trim" or "zero")
        {
            return new BlockDeviceException(BlockError.ReadOnly, "read-only device");
        }
        if (Fault?.Invoke(operation, offset) is { } error)
        {
            return new BlockDeviceException(error, $"injected {error} on {operation}");
        }
        return null;
    }

    // Pooled builders, like a tuned engine would use: a ValueTask consumed twice then misbehaves, so tests catch it.
    // Separate methods, not lambdas: a lambda capturing parameters allocates its closure on every call, even synchronous ones.
    private async Task Jitter()
    {
        int now = Interlocked.Increment(ref _inFlight);
        int seen;
        while (now > (seen = Volatile.Read(ref _maxInFlight)) && Interlocked.CompareExchange(ref _maxInFlight, now, seen) != seen)
        {
        }
        try
        {
            await Task.Delay(Random.Shared.Next(0, 2));
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadLaterAsync(long offset, Memory<byte> destination)
    {
        await Jitter();
        DoRead(offset, destination.Span);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteLaterAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags)
    {
        await Jitter();
        DoWrite(offset, source.Span, flags);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask FlushLaterAsync()
    {
        await Jitter();
        Interlocked.Increment(ref _flushes);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ZeroLaterAsync(long offset, long length, AllocationState state)
    {
        await Jitter();
        DoZero(offset, length, state);
    }
}

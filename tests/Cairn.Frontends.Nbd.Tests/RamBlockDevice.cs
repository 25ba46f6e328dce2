using Cairn.Core;

namespace Cairn.Frontends.Nbd.Tests;

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

    public int Flushes => Volatile.Read(ref _flushes);
    public int FuaWrites => Volatile.Read(ref _fuaWrites);
    public Span<byte> Data => _data;

    public AllocationState PageState(long offset) => _pages[offset / PageBytes];

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
        Run("read", offset, destination.Length, () => _data.AsSpan((int)offset, destination.Length).CopyTo(destination.Span));

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        Run("write", offset, source.Length, () =>
        {
            source.Span.CopyTo(_data.AsSpan((int)offset));
            MarkPages(offset, source.Length, AllocationState.Data, wholePagesOnly: false);
            if ((flags & WriteFlags.ForceUnitAccess) != 0)
            {
                Interlocked.Increment(ref _fuaWrites);
            }
        });

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) =>
        Run("flush", 0, 0, () => Interlocked.Increment(ref _flushes));

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        Run("trim", offset, length, () =>
        {
            _data.AsSpan((int)offset, (int)length).Clear();
            MarkPages(offset, length, AllocationState.Hole, wholePagesOnly: true);
        });

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        if ((zeroFlags & ZeroFlags.FastOnly) != 0 && !FastZeroSupported)
        {
            return ValueTask.FromException(new BlockDeviceException(BlockError.NotSupported, "fast zero not supported"));
        }
        return Run("zero", offset, length, () =>
        {
            _data.AsSpan((int)offset, (int)length).Clear();
            var state = (zeroFlags & ZeroFlags.NoHole) != 0 ? AllocationState.Zero : AllocationState.Hole;
            MarkPages(offset, length, state, wholePagesOnly: true);
        });
    }

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

    private ValueTask Run(string operation, long offset, long length, Action action)
    {
        if (offset < 0 || length < 0 || offset + length > SizeBytes)
        {
            return ValueTask.FromException(new BlockDeviceException(BlockError.InvalidArgument, "range outside the device"));
        }
        if (IsReadOnly && operation is "write" or "trim" or "zero")
        {
            return ValueTask.FromException(new BlockDeviceException(BlockError.ReadOnly, "read-only device"));
        }
        if (Fault?.Invoke(operation, offset) is { } error)
        {
            return ValueTask.FromException(new BlockDeviceException(error, $"injected {error} on {operation}"));
        }
        if (!Asynchronous)
        {
            action();
            return ValueTask.CompletedTask;
        }
        return RunLaterAsync(action);
    }

    private static async ValueTask RunLaterAsync(Action action)
    {
        await Task.Delay(Random.Shared.Next(0, 2));
        action();
    }
}

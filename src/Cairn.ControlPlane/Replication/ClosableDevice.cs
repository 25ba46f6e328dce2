using Cairn.Core;

namespace Cairn.ControlPlane.Replication;

/// <summary>
/// A device that can be closed and drained: after <see cref="CloseAsync"/> returns, no request that came through it
/// is still running and every later one fails. A node hands its copy from the replica service to itself as the new
/// owner only after this, so a write from the deposed owner still in flight can never land after the new owner's.
/// </summary>
public sealed class ClosableDevice(IBlockDevice inner) : IBlockDevice
{
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _inFlight;
    private volatile bool _closed;

    public long SizeBytes => inner.SizeBytes;

    public int PreferredBlockSizeBytes => inner.PreferredBlockSizeBytes;

    public bool IsReadOnly => inner.IsReadOnly;

    public async Task CloseAsync()
    {
        _closed = true;
        if (Volatile.Read(ref _inFlight) == 0)
        {
            _drained.TrySetResult();
        }
        await _drained.Task;
    }

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        Enter();
        return Leave(inner.ReadAsync(offset, destination, cancellationToken));
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        Enter();
        return Leave(inner.WriteAsync(offset, source, flags, cancellationToken));
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        Enter();
        return Leave(inner.FlushAsync(cancellationToken));
    }

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        Enter();
        return Leave(inner.TrimAsync(offset, length, flags, cancellationToken));
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        Enter();
        return Leave(inner.WriteZeroesAsync(offset, length, zeroFlags, flags, cancellationToken));
    }

    public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        return inner.GetAllocationAsync(offset, length, extents, cancellationToken);
    }

    private void Enter()
    {
        Interlocked.Increment(ref _inFlight);
        if (_closed)
        {
            Exit();
            ThrowIfClosed();
        }
    }

    private async ValueTask Leave(ValueTask operation)
    {
        try
        {
            await operation;
        }
        finally
        {
            Exit();
        }
    }

    private void Exit()
    {
        if (Interlocked.Decrement(ref _inFlight) == 0 && _closed)
        {
            _drained.TrySetResult();
        }
    }

    private void ThrowIfClosed()
    {
        if (_closed)
        {
            throw new BlockDeviceException(BlockError.Shutdown, "this replica was closed: the volume moved or was removed from this node");
        }
    }
}

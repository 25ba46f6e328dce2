using System.Net;
using Cairn.ControlPlane.Replication;
using Cairn.Core;
using Cairn.Replication;

namespace Cairn.ControlPlane.Tests;

/// <summary>
/// The drain before a handover, through the real replica service: the replica server runs a deposed owner's requests
/// concurrently, so when the node closes its copy to serve the volume itself, every request that came through must
/// have finished, and nothing that comes later may reach the data.
/// </summary>
public sealed class ClosableDeviceTests : IAsyncLifetime
{
    private readonly GatedDevice _data = new(1 << 20);
    private readonly ClosableDevice _copy;
    private readonly ReplicaCatalog _catalog = new();
    private ReplicaServer _server = null!;

    public ClosableDeviceTests() => _copy = new ClosableDevice(_data);

    public ValueTask InitializeAsync()
    {
        _catalog.Add(new ReplicaTarget("v1", _copy));
        _server = new ReplicaServer(_catalog, new FrontendLog(_ => { }, _ => { }, (_, _) => { }));
        _server.Start(new IPEndPoint(IPAddress.Loopback, 0));
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task Closing_waits_for_every_request_in_flight_on_the_replica_service_and_refuses_later_ones()
    {
        await using var owner = await ReplicaLink.ConnectAsync(_server.LocalEndpoint, "v1", 1);
        byte[] block = [.. Enumerable.Repeat((byte)0x5A, 4096)];
        var held = owner.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 0, 4096, block, default).AsTask();
        await _data.Reached.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ReplicaStatus.Ok, await owner.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 8192, 4096, block, default)); // runs beside it

        var closing = _copy.CloseAsync();
        await Task.Delay(200);
        Assert.False(closing.IsCompleted, "the handover went ahead while a write through the replica service was still running");

        _data.Release.SetResult();
        await closing.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ReplicaStatus.Ok, await held);
        Assert.Equal(ReplicaStatus.Shutdown, await owner.SendAsync(ReplicaOp.Write, ReplicaFlags.None, 16384, 4096, block, default));
        Assert.Equal(0, _data.Bytes[16384]); // the refused write never reached the data
    }

    /// <summary>Memory that holds the first write at offset 0 until released.</summary>
    private sealed class GatedDevice(int sizeBytes) : IBlockDevice
    {
        public byte[] Bytes { get; } = new byte[sizeBytes];

        public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public long SizeBytes => Bytes.Length;

        public int PreferredBlockSizeBytes => 4096;

        public bool IsReadOnly => false;

        public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
        {
            Bytes.AsMemory((int)offset, destination.Length).CopyTo(destination);
            return ValueTask.CompletedTask;
        }

        public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            if (offset == 0 && Reached.TrySetResult())
            {
                await Release.Task;
            }
            source.CopyTo(Bytes.AsMemory((int)offset));
        }

        public ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
            WriteZeroesAsync(offset, length, ZeroFlags.None, flags, cancellationToken);

        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
        {
            Bytes.AsSpan((int)offset, (int)length).Clear();
            return ValueTask.CompletedTask;
        }

        public ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
        {
            extents.Span[0] = new AllocationExtent(length, AllocationState.Data);
            return ValueTask.FromResult(1);
        }
    }
}

using System.Diagnostics.CodeAnalysis;
using Cairn.BlockStore;
using Cairn.ControlPlane;
using Cairn.Core;

namespace Cairn.Testing;

/// <summary>
/// An in-memory pool for control-plane, API and CLI tests: these test bookkeeping, not storage,
/// so they do not need the block store. Shared by linking this file into each test project.
/// </summary>
internal sealed class MemoryVolumePool(string name, long capacityBytes = 1L << 40) : IVolumePool
{
    private readonly Dictionary<string, MemoryStoredVolume> _volumes = new(StringComparer.Ordinal);

    public string Name { get; } = name;
    public string Directory => "/memory/" + Name;
    public long CapacityBytes { get; } = capacityBytes;

    public long UsedBytes
    {
        get
        {
            lock (_volumes)
            {
                return _volumes.Values.Sum(v => v.AllocatedBytes);
            }
        }
    }

    public long FreeBytes => CapacityBytes - UsedBytes;

    /// <summary>Set to play a pool whose drive failed.</summary>
    public string? Fault { get; set; }

    public bool Disposed { get; private set; }

    public IReadOnlyList<StoredVolumeInfo> ListVolumes()
    {
        lock (_volumes)
        {
            return [.. _volumes.Values.Select(v => new StoredVolumeInfo(v.Id, v.SizeBytes, v.AllocatedBytes, DateTimeOffset.UnixEpoch))];
        }
    }

    public StoredVolume CreateVolume(string volumeId, long sizeBytes)
    {
        lock (_volumes)
        {
            if (_volumes.ContainsKey(volumeId))
            {
                throw new InvalidOperationException($"volume {volumeId} exists");
            }
            var volume = new MemoryStoredVolume(volumeId, sizeBytes);
            _volumes[volumeId] = volume;
            return volume;
        }
    }

    public bool TryGetVolume(string volumeId, [NotNullWhen(true)] out StoredVolume? volume)
    {
        lock (_volumes)
        {
            volume = _volumes.GetValueOrDefault(volumeId);
            return volume is not null;
        }
    }

    public void DeleteVolume(string volumeId)
    {
        lock (_volumes)
        {
            _volumes.Remove(volumeId);
        }
    }

    public void Dispose() => Disposed = true;
}

internal sealed class MemoryStoredVolume(string id, long sizeBytes) : StoredVolume
{
    private const int BlockBytes = 4096;
    private readonly Dictionary<long, byte[]> _blocks = [];
    private long _sizeBytes = sizeBytes;

    public override string Id { get; } = id;
    public override long AllocatedBytes { get { lock (_blocks) { return _blocks.Count * (long)BlockBytes; } } }
    public override long ChecksumErrors => 0;
    public override long SizeBytes => Interlocked.Read(ref _sizeBytes);
    public override int PreferredBlockSizeBytes => BlockBytes;
    public override bool IsReadOnly => false;

    public override void Grow(long newSizeBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(newSizeBytes, SizeBytes);
        Interlocked.Exchange(ref _sizeBytes, newSizeBytes);
    }

    public override ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        lock (_blocks)
        {
            for (int i = 0; i < destination.Length; i++)
            {
                long at = offset + i;
                destination.Span[i] = _blocks.TryGetValue(at / BlockBytes, out var block) ? block[at % BlockBytes] : (byte)0;
            }
        }
        return ValueTask.CompletedTask;
    }

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        lock (_blocks)
        {
            for (int i = 0; i < source.Length; i++)
            {
                long at = offset + i;
                if (!_blocks.TryGetValue(at / BlockBytes, out var block))
                {
                    _blocks[at / BlockBytes] = block = new byte[BlockBytes];
                }
                block[at % BlockBytes] = source.Span[i];
            }
        }
        return ValueTask.CompletedTask;
    }

    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    public override ValueTask TrimAsync(long offset, long length, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        WriteZeroesAsync(offset, length, ZeroFlags.None, flags, cancellationToken);

    public override ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags zeroFlags, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default) =>
        WriteAsync(offset, new byte[length], flags, cancellationToken);

    public override ValueTask<int> GetAllocationAsync(long offset, long length, Memory<AllocationExtent> extents, CancellationToken cancellationToken = default)
    {
        extents.Span[0] = new AllocationExtent(length, AllocationState.Data);
        return ValueTask.FromResult(1);
    }
}

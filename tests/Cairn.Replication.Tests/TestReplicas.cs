using Cairn.Core;

namespace Cairn.Replication.Tests;

/// <summary>A replica reached by a direct call; it can be made unreachable or answer a chosen status.</summary>
internal sealed class DirectChannel(ReplicaTarget target, ulong epoch) : IReplicaChannel
{
    public string Replica => target.Name;

    public bool Unreachable { get; set; }

    public ReplicaStatus? Answer { get; set; }

    public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        if (Unreachable)
        {
            throw new ReplicaLinkException($"{Replica} unreachable");
        }
        return Answer ?? await target.ExecuteAsync(new ReplicaRequest(op, flags, epoch, 1, offset, length), payload, readInto, cancellationToken);
    }
}

/// <summary>
/// Wraps a channel: answers asynchronously, so changes overlap, and fails every send after the first
/// <paramref name="goodSends"/>; while <see cref="Hold"/> is set, a send waits for it, then fails.
/// </summary>
internal sealed class FlakyChannel(IReplicaChannel inner, int goodSends = int.MaxValue) : IReplicaChannel
{
    private int _sent;

    public string Replica => inner.Replica;

    public TaskCompletionSource? Hold { get; set; }

    public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        await Task.Yield();
        if (Hold is { } hold)
        {
            await hold.Task;
            throw new ReplicaLinkException($"{Replica} lost while the request was in flight");
        }
        if (Interlocked.Increment(ref _sent) > goodSends)
        {
            throw new ReplicaLinkException($"{Replica} unreachable");
        }
        return await inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
    }
}

/// <summary>The cluster store's side, as a compare-and-swap on the epoch.</summary>
internal sealed class InSyncSet(ulong epoch, params string[] replicas) : IInSyncSet
{
    public ulong Epoch { get; set; } = epoch;

    public List<string> Replicas { get; } = [.. replicas];

    public TaskCompletionSource? Gate { get; set; }

    /// <summary>The oldest epoch each drop said its replicas may lack writes of, in order.</summary>
    public List<ulong> MissingSince { get; } = [];

    public async ValueTask<ulong> DropAsync(IReadOnlyList<string> replicas, ulong epoch, ulong missingSince, CancellationToken cancellationToken = default)
    {
        if (Gate is { } gate)
        {
            await gate.Task;
        }
        if (epoch != Epoch)
        {
            throw new ReplicaFencedException($"epoch {epoch} is not current ({Epoch})");
        }
        Replicas.RemoveAll(replicas.Contains);
        MissingSince.Add(missingSince);
        return ++Epoch;
    }

    public ValueTask<ulong> AdmitAsync(string replica, ulong epoch, CancellationToken cancellationToken = default)
    {
        if (epoch != Epoch)
        {
            throw new ReplicaFencedException($"epoch {epoch} is not current ({Epoch})");
        }
        Replicas.Add(replica);
        return ValueTask.FromResult(++Epoch);
    }
}

/// <summary>Counts what goes through a channel: the bytes written, and the bytes trimmed or zeroed.</summary>
internal sealed class CountingChannel(IReplicaChannel inner) : IReplicaChannel
{
    private long _writtenBytes;
    private long _uncachedBytes;
    private long _smallestUncached = uint.MaxValue;
    private long _largestCached;
    private long _erasedBytes;
    private long _requests;

    public string Replica => inner.Replica;

    public long WrittenBytes => Interlocked.Read(ref _writtenBytes);

    /// <summary>Bytes of writes flagged <see cref="ReplicaFlags.Uncached"/>: a rebuild's copy.</summary>
    public long UncachedBytes => Interlocked.Read(ref _uncachedBytes);

    /// <summary>The shortest write flagged <see cref="ReplicaFlags.Uncached"/> (uint.MaxValue: none).</summary>
    public long SmallestUncachedWrite => Interlocked.Read(ref _smallestUncached);

    /// <summary>The longest write not flagged <see cref="ReplicaFlags.Uncached"/> (0: none).</summary>
    public long LargestCachedWrite => Interlocked.Read(ref _largestCached);

    public long ErasedBytes => Interlocked.Read(ref _erasedBytes);

    public long Requests => Interlocked.Read(ref _requests);

    public ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _requests);
        if (op == ReplicaOp.Write)
        {
            Interlocked.Add(ref _writtenBytes, length);
            if ((flags & ReplicaFlags.Uncached) != 0)
            {
                Interlocked.Add(ref _uncachedBytes, length);
                InterlockedMin(ref _smallestUncached, length);
            }
            else
            {
                InterlockedMax(ref _largestCached, length);
            }
        }
        else if (op is ReplicaOp.Trim or ReplicaOp.WriteZeroes)
        {
            Interlocked.Add(ref _erasedBytes, length);
        }
        return inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
    }

    private static void InterlockedMin(ref long target, long value)
    {
        for (long seen = Interlocked.Read(ref target); value < seen; seen = Interlocked.Read(ref target))
        {
            if (Interlocked.CompareExchange(ref target, value, seen) == seen)
            {
                return;
            }
        }
    }

    private static void InterlockedMax(ref long target, long value)
    {
        for (long seen = Interlocked.Read(ref target); value > seen; seen = Interlocked.Read(ref target))
        {
            if (Interlocked.CompareExchange(ref target, value, seen) == seen)
            {
                return;
            }
        }
    }
}

internal static class TestData
{
    public static byte[] Pattern(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}

/// <summary>A replica node's volume control that records what it was asked, in one log shared by every replica of a test.</summary>
internal sealed class RecordingControl(string replica, Func<byte[]> image, List<string> log, Action<byte[]>? restore = null) : IReplicaVolumeControl
{
    public Dictionary<string, byte[]> Snapshots { get; } = [];

    public void Grow(long sizeBytes) => Record($"{replica} grow {sizeBytes}");

    public void CreateSnapshot(string name)
    {
        if (Snapshots.ContainsKey(name))
        {
            throw new InvalidOperationException($"snapshot {name} exists");
        }
        Snapshots[name] = image();
        Record($"{replica} snapshot {name}");
    }

    public void DeleteSnapshot(string name)
    {
        if (!Snapshots.Remove(name))
        {
            throw new ArgumentException($"no snapshot {name}", nameof(name));
        }
        Record($"{replica} delete {name}");
    }

    public void DeleteAllSnapshots()
    {
        Snapshots.Clear();
        Record($"{replica} delete all");
    }

    public void RevertToSnapshot(string name)
    {
        if (!Snapshots.TryGetValue(name, out byte[]? content))
        {
            throw new ArgumentException($"no snapshot {name}", nameof(name));
        }
        (restore ?? throw new NotSupportedException("this replica cannot revert"))(content);
        Record($"{replica} revert {name}");
    }

    /// <summary>Snapshot blocks (name, offset) whose copy here fails its checksum: reading one answers an IO error.</summary>
    public HashSet<(string Snapshot, long OffsetBytes)> BadSnapshotBlocks { get; } = [];

    public ValueTask ReadSnapshotBlockAsync(string name, long offsetBytes, Memory<byte> block, CancellationToken cancellationToken)
    {
        if (!Snapshots.TryGetValue(name, out byte[]? content))
        {
            throw new KeyNotFoundException($"no snapshot {name}");
        }
        if (BadSnapshotBlocks.FirstOrDefault(b => b.Snapshot == name && b.OffsetBytes >= offsetBytes && b.OffsetBytes < offsetBytes + block.Length) is { Snapshot: not null } bad)
        {
            throw new BlockDeviceException(BlockError.Io, $"checksum mismatch in snapshot {name} at byte {bad.OffsetBytes}");
        }
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(offsetBytes, content.LongLength);
        int inside = (int)Math.Min(block.Length, content.LongLength - offsetBytes);
        content.AsSpan((int)offsetBytes, inside).CopyTo(block.Span);
        block.Span[inside..].Clear();
        Record($"{replica} read {name} at {offsetBytes}");
        return ValueTask.CompletedTask;
    }

    /// <summary>Like a pool's in-place rewrite: only the snapshot's own content (the checksum's) mends a bad block.</summary>
    public SnapshotRewrite RewriteSnapshotBlock(string name, long offsetBytes, ReadOnlySpan<byte> block)
    {
        if (!Snapshots.TryGetValue(name, out byte[]? content))
        {
            throw new KeyNotFoundException($"no snapshot {name}");
        }
        Record($"{replica} rewrite {name} at {offsetBytes}");
        if (Crc32C.Compute(block) != Crc32C.Compute(content.AsSpan((int)offsetBytes, block.Length)))
        {
            return new SnapshotRewrite(SnapshotRewriteOutcome.WrongData, "does not match the block's checksum");
        }
        return BadSnapshotBlocks.Remove((name, offsetBytes))
            ? new SnapshotRewrite(SnapshotRewriteOutcome.Rewritten, "rewritten in place")
            : new SnapshotRewrite(SnapshotRewriteOutcome.AlreadyGood, "reads correctly");
    }

    private void Record(string entry)
    {
        lock (log)
        {
            log.Add(entry);
        }
    }
}

/// <summary>Holds the first write sent through it until <see cref="Release"/> completes, then passes it on.</summary>
internal sealed class HoldFirstWriteChannel(IReplicaChannel inner) : IReplicaChannel
{
    private int _held;

    public string Replica => inner.Replica;

    public TaskCompletionSource Reached { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async ValueTask<ReplicaStatus> SendAsync(ReplicaOp op, ReplicaFlags flags, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> readInto, CancellationToken cancellationToken = default)
    {
        if (op == ReplicaOp.Write && Interlocked.Exchange(ref _held, 1) == 0)
        {
            Reached.SetResult();
            await Release.Task;
        }
        return await inner.SendAsync(op, flags, offset, length, payload, readInto, cancellationToken);
    }
}

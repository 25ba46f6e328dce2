using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>What became of one bad block.</summary>
public enum BlockRepairOutcome
{
    /// <summary>Rewritten from a good copy: it reads correctly again.</summary>
    Repaired,

    /// <summary>It read correctly by the time the repair reached it (a client write had replaced it): nothing to do.</summary>
    AlreadyGood,

    /// <summary>No good copy could be written over it: it stays as it was, and reading it still fails.</summary>
    Unrecoverable,
}

/// <summary>One bad block and what its repair did. <paramref name="Replica"/> names the copy that was bad: null for the owner's own.</summary>
public sealed record BlockRepair(string? Replica, long OffsetBytes, BlockRepairOutcome Outcome, string Detail)
{
    /// <summary>The snapshot the block belongs to; null for the live volume's.</summary>
    public string? Snapshot { get; init; }
}

/// <summary>What verifying the in-sync replicas covered: blocks checked (summed over replicas), and replicas that could not be verified, with why.</summary>
public sealed record ReplicaScrubResult(long BlocksVerified, IReadOnlyList<string> Unverified);

/// <summary>
/// Repair of bad blocks (invariant 4). The owner's bad block is rewritten from an in-sync replica whose copy reads
/// correctly (the replica's store verifies its checksum on read; one that fails means try the next); an in-sync
/// replica's bad block, found by a verify request, is rewritten from the owner's copy. Only the owner writes, and
/// always under the write ordering of client changes: while repairs run, every change holds its range shared in a
/// <see cref="RegionGate"/>, and a repair holds its 4 KiB block exclusively from reading the good copy to writing it,
/// so no change to that block is in flight anywhere meanwhile. A good copy read in that window is therefore current,
/// and a client write to the block lands after the repair, never under it. The gate is in the membership only while
/// a repair runs: changes pay nothing otherwise.
/// </summary>
public sealed partial class ReplicatedVolume
{
    /// <summary>The unit of repair: the block store's checksummed block.</summary>
    public const int RepairBlockBytes = ReplicaProtocol.VerifyBlockBytes;

    private readonly SemaphoreSlim _repairWindow = new(1, 1); // the gate has one exclusive window: one block repaired at a time
    private int _repairers;                                   // under _changing
    private Task _repairGateReady = Task.CompletedTask;      // under _changing

    /// <summary>A client read met bad blocks on the owner: each was repaired from a replica, or found unrecoverable. For logs.</summary>
    public event Action<BlockRepair>? ReadRepaired;

    /// <summary>
    /// Repairs the owner's blocks at <paramref name="offsets"/> (multiples of <see cref="RepairBlockBytes"/>, found bad
    /// by a scrub): each still bad is rewritten from the first in-sync replica with a good copy. Reports each block.
    /// </summary>
    /// <exception cref="BlockDeviceException">The volume is fenced or its owner's lease lapsed: nothing more is repaired.</exception>
    public async Task RepairLocalAsync(IEnumerable<long> offsets, Action<BlockRepair> report, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(offsets);
        ArgumentNullException.ThrowIfNull(report);
        ThrowIfUnavailable();
        var gate = await StartRepairingAsync(cancellationToken);
        byte[] buffer = new byte[RepairBlockBytes];
        try
        {
            foreach (long offset in offsets)
            {
                report(await RepairLocalBlockAsync(gate, offset, buffer, cancellationToken));
            }
        }
        finally
        {
            await StopRepairingAsync();
        }
    }

    /// <summary>
    /// Verifies every in-sync replica's copy of each block the owner holds data in, with verify requests (the data stays
    /// on the replica's node: only a bitmap of bad blocks comes back), and rewrites each bad block from the owner's copy.
    /// <paramref name="bytesPerSecond"/> above 0 paces each replica's reads. Reports each bad block, and progress in blocks.
    /// A replica that fails a rewrite is dropped from the in-sync set like on a failed write, the block recorded for its resync.
    /// </summary>
    public async Task<ReplicaScrubResult> ScrubReplicasAsync(Action<BlockRepair> report, IProgress<long>? blocksVerified = null, long bytesPerSecond = 0,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(report);
        ThrowIfUnavailable();
        var run = new ReplicaScrub(this, report, blocksVerified, bytesPerSecond, cancellationToken);
        await foreach (var (start, end) in DataRangesAsync(_local, cancellationToken))
        {
            await run.VerifyAsync(start, end);
        }
        return run.Result();
    }

    /// <summary>Makes changes hold their ranges in a repair gate, and waits until every change that started without it has finished.</summary>
    private async Task<RegionGate> StartRepairingAsync(CancellationToken cancellationToken)
    {
        RegionGate gate;
        Task ready;
        await _changing.WaitAsync(cancellationToken);
        try
        {
            if (_repairers++ == 0)
            {
                _repairGateReady = Swap(_membership.WithRepairGate(new RegionGate()));
            }
            gate = _membership.RepairGate!; // every membership swapped in while repairers remain carries it
            ready = _repairGateReady;
        }
        finally
        {
            _changing.Release();
        }
        try
        {
            await ready.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            await StopRepairingAsync();
            throw;
        }
        return gate;
    }

    private async Task StopRepairingAsync()
    {
        await _changing.WaitAsync(CancellationToken.None);
        try
        {
            if (--_repairers == 0)
            {
                _ = Swap(_membership.WithRepairGate(null));
            }
        }
        finally
        {
            _changing.Release();
        }
    }

    private async Task EnterRepairWindowAsync(RegionGate gate, long offset, int length, CancellationToken cancellationToken)
    {
        await _repairWindow.WaitAsync(cancellationToken);
        try
        {
            await gate.EnterCopyAsync(offset, offset + length, cancellationToken);
        }
        catch
        {
            _repairWindow.Release();
            throw;
        }
    }

    private void ExitRepairWindow(RegionGate gate)
    {
        gate.ExitCopy();
        _repairWindow.Release();
    }

    /// <summary>The block at <paramref name="offset"/> in <paramref name="buffer"/>: 4 KiB, or less for a volume's last, partial block.</summary>
    private Memory<byte> BlockAt(long offset, byte[] buffer)
    {
        if (offset < 0 || offset >= SizeBytes || offset % RepairBlockBytes != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"a repair covers one {RepairBlockBytes}-byte block inside the volume ({SizeBytes} bytes)");
        }
        return buffer.AsMemory(0, (int)Math.Min(RepairBlockBytes, SizeBytes - offset));
    }

    private async Task<bool> ReadsLocallyAsync(long offset, Memory<byte> block, CancellationToken cancellationToken)
    {
        try
        {
            await _local.ReadAsync(offset, block, cancellationToken);
            return true;
        }
        catch (BlockDeviceException e) when (e.Error == BlockError.Io)
        {
            return false;
        }
    }

    private async Task<BlockRepair> RepairLocalBlockAsync(RegionGate gate, long offset, byte[] buffer, CancellationToken cancellationToken)
    {
        var block = BlockAt(offset, buffer);
        await EnterRepairWindowAsync(gate, offset, block.Length, cancellationToken);
        try
        {
            ThrowIfUnavailable();
            if (await ReadsLocallyAsync(offset, block, cancellationToken))
            {
                return new BlockRepair(null, offset, BlockRepairOutcome.AlreadyGood, "reads correctly now: a write replaced it since");
            }
            List<string>? failures = null;
            foreach (var replica in _membership.InSync)
            {
                var status = await ReadRemoteAsync(replica, offset, block, cancellationToken);
                if (status == ReplicaStatus.Ok)
                {
                    return await RewriteLocallyAsync(replica.Replica, offset, block, cancellationToken);
                }
                (failures ??= []).Add($"{replica.Replica}: {DescribeFailedRead(status)}");
            }
            return new BlockRepair(null, offset, BlockRepairOutcome.Unrecoverable, failures is null
                ? "no other replica is in sync to take a good copy from"
                : $"no in-sync replica has a good copy ({string.Join("; ", failures)})");
        }
        finally
        {
            ExitRepairWindow(gate);
        }
    }

    private static string DescribeFailedRead(ReplicaStatus status) => status switch
    {
        ReplicaStatus.Io => "its copy fails too",
        ReplicaStatus.Shutdown => "unreachable",
        _ => $"answered {status}",
    };

    /// <summary>Reads one block from a replica; one that has seen a newer epoch fences this owner.</summary>
    private Task<ReplicaStatus> ReadRemoteAsync(IReplicaChannel replica, long offset, Memory<byte> block, CancellationToken cancellationToken) =>
        ReadRemoteAsync(replica, ReplicaOp.Read, offset, (uint)block.Length, default, block, cancellationToken);

    /// <summary>Sends one read (of the volume or of a snapshot's block) to a replica; one that has seen a newer epoch fences this owner.</summary>
    private async Task<ReplicaStatus> ReadRemoteAsync(IReplicaChannel replica, ReplicaOp op, long offset, uint length, ReadOnlyMemory<byte> payload,
        Memory<byte> into, CancellationToken cancellationToken)
    {
        ReplicaStatus status;
        try
        {
            status = await replica.SendAsync(op, ReplicaFlags.None, offset, length, payload, into, cancellationToken);
        }
        catch (ReplicaLinkException)
        {
            return ReplicaStatus.Shutdown;
        }
        if (status == ReplicaStatus.StaleEpoch)
        {
            Fence($"replica {replica.Replica} has seen a newer epoch than {Epoch}: another owner took over");
            ThrowIfFenced();
        }
        return status;
    }

    /// <summary>A whole-block write replaces the bad copy (the store never merges with it); FUA, so the repair outlives a crash.</summary>
    private async Task<BlockRepair> RewriteLocallyAsync(string source, long offset, Memory<byte> block, CancellationToken cancellationToken)
    {
        try
        {
            await _local.WriteAsync(offset, block, WriteFlags.ForceUnitAccess, cancellationToken);
        }
        catch (BlockDeviceException e)
        {
            return new BlockRepair(null, offset, BlockRepairOutcome.Unrecoverable, $"the copy on {source} is good, but rewriting this one failed: {e.Message}");
        }
        return new BlockRepair(null, offset, BlockRepairOutcome.Repaired, $"rewritten from the copy on {source}");
    }

    /// <summary>Rewrites a replica's bad block from the owner's copy, inside the block's repair window.</summary>
    private async Task<BlockRepair> RepairReplicaBlockAsync(RegionGate gate, IReplicaChannel replica, long offset, byte[] buffer, CancellationToken cancellationToken)
    {
        var block = BlockAt(offset, buffer);
        await EnterRepairWindowAsync(gate, offset, block.Length, cancellationToken);
        try
        {
            ThrowIfUnavailable();
            if (Array.IndexOf(_membership.InSync, replica) < 0)
            {
                return new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable, "it left the in-sync set before the block could be rewritten");
            }
            if (!await ReadsLocallyAsync(offset, block, cancellationToken))
            {
                return new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable, "the owner's copy fails too: no good copy to rewrite it from");
            }
            var change = new Change(ReplicaOp.Write, ReplicaFlags.ForceUnitAccess, offset, block.Length, block, WriteFlags.ForceUnitAccess, ZeroFlags.None);
            var status = await SendAsync(replica, change, cancellationToken);
            if (status == ReplicaStatus.Ok)
            {
                return new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Repaired, "rewritten from the owner's copy");
            }
            if (status == ReplicaStatus.StaleEpoch)
            {
                Fence($"replica {replica.Replica} has seen a newer epoch than {Epoch}: another owner took over");
                ThrowIfFenced();
            }
            await DropAsync([replica], change, cancellationToken); // records the block, so the replica's resync rewrites it
            return new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable,
                $"the replica answered {status} to the rewrite and left the in-sync set; its resync will rewrite the block");
        }
        finally
        {
            ExitRepairWindow(gate);
        }
    }

    /// <summary>
    /// Repairs the bad blocks of a client read's range; true when every block of it reads correctly now. Blocks that
    /// read fine are left alone; only bad ones take the repair gate.
    /// </summary>
    private async Task<bool> RepairReadRangeAsync(long offset, int length, CancellationToken cancellationToken)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(RepairBlockBytes);
        RegionGate? gate = null;
        bool healed = true;
        try
        {
            for (long at = offset / RepairBlockBytes * RepairBlockBytes; at < offset + length; at += RepairBlockBytes)
            {
                if (await ReadsLocallyAsync(at, BlockAt(at, buffer), cancellationToken))
                {
                    continue;
                }
                gate ??= await StartRepairingAsync(cancellationToken);
                var repair = await RepairLocalBlockAsync(gate, at, buffer, cancellationToken);
                ReadRepaired?.Invoke(repair);
                healed &= repair.Outcome != BlockRepairOutcome.Unrecoverable;
            }
        }
        finally
        {
            if (gate is not null)
            {
                await StopRepairingAsync();
            }
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return healed;
    }

    /// <summary>
    /// One pass of <see cref="ScrubReplicasAsync"/>: verifies windows of data on every in-sync replica at once, repairs,
    /// paces. Verifying needs no ordering (a replica runs a verify only when no write overlapping it runs, so it sees whole writes); the repair
    /// gate goes up only around the repair of blocks found bad, so client changes pay for it only then.
    /// </summary>
    private sealed class ReplicaScrub(ReplicatedVolume volume, Action<BlockRepair> report, IProgress<long>? progress, long bytesPerSecond,
        CancellationToken cancellationToken)
    {
        private readonly Dictionary<string, string> _unverified = new(StringComparer.Ordinal);
        private readonly byte[] _block = new byte[RepairBlockBytes];
        private readonly ScrubPacer _pacer = new(bytesPerSecond);
        private long _blocksVerified;

        public ReplicaScrubResult Result() => new(_blocksVerified, [.. _unverified.Select(u => $"{u.Key}: {u.Value}")]);

        /// <summary>Verifies [<paramref name="start"/>, <paramref name="end"/>) in windows of one verify request each.</summary>
        public async Task VerifyAsync(long start, long end)
        {
            for (long at = start / RepairBlockBytes * RepairBlockBytes; at < end; at += ReplicaProtocol.MaxVerifyBytes)
            {
                int length = (int)Math.Min(ReplicaProtocol.MaxVerifyBytes, Math.Min(end, volume.SizeBytes) - at);
                volume.ThrowIfUnavailable();
                var replicas = volume._membership.InSync.Where(r => !_unverified.ContainsKey(r.Replica)).ToArray();
                var answers = await Task.WhenAll(replicas.Select(r => VerifyOneAsync(r, at, length)));
                for (int i = 0; i < replicas.Length; i++)
                {
                    if (answers[i].Failure is { } failure)
                    {
                        _unverified[replicas[i].Replica] = failure;
                    }
                }
                if (answers.Any(a => a.Bad != 0))
                {
                    await RepairAsync(replicas, answers, at);
                }
                _blocksVerified += (length + RepairBlockBytes - 1) / RepairBlockBytes * (long)replicas.Length;
                progress?.Report(_blocksVerified);
                await _pacer.ReadAsync(length, cancellationToken);
            }
        }

        private async Task RepairAsync(IReplicaChannel[] replicas, (ulong Bad, string? Failure)[] answers, long windowStart)
        {
            var gate = await volume.StartRepairingAsync(cancellationToken);
            try
            {
                for (int i = 0; i < replicas.Length; i++)
                {
                    for (ulong bad = answers[i].Bad; bad != 0; bad &= bad - 1)
                    {
                        long offset = windowStart + (long)System.Numerics.BitOperations.TrailingZeroCount(bad) * RepairBlockBytes;
                        report(await volume.RepairReplicaBlockAsync(gate, replicas[i], offset, _block, cancellationToken));
                    }
                }
            }
            finally
            {
                await volume.StopRepairingAsync();
            }
        }

        private async Task<(ulong Bad, string? Failure)> VerifyOneAsync(IReplicaChannel replica, long offset, int length)
        {
            byte[] bitmap = new byte[ReplicaProtocol.VerifyReplyBytes];
            ReplicaStatus status;
            try
            {
                status = await replica.SendAsync(ReplicaOp.Verify, ReplicaFlags.None, offset, (uint)length, default, bitmap, cancellationToken);
            }
            catch (ReplicaLinkException e)
            {
                return (0, $"unreachable: {e.Message}");
            }
            if (status == ReplicaStatus.StaleEpoch)
            {
                volume.Fence($"replica {replica.Replica} has seen a newer epoch than {volume.Epoch}: another owner took over");
                volume.ThrowIfFenced();
            }
            return status == ReplicaStatus.Ok
                ? (BinaryPrimitives.ReadUInt64LittleEndian(bitmap), null)
                : (0, $"answered {status} to a verify of {length} bytes at offset {offset}");
        }

    }

    /// <summary>Keeps a scrub of the replicas at or under a byte rate (0: unpaced). Each replica reads its own disk, so the rate is per replica.</summary>
    private sealed class ScrubPacer(long bytesPerSecond)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private long _bytesPerReplica;

        /// <summary>Counts a window each replica read, and waits while ahead of the rate.</summary>
        public async Task ReadAsync(long bytes, CancellationToken cancellationToken)
        {
            _bytesPerReplica += bytes;
            double ahead = bytesPerSecond > 0 ? _bytesPerReplica / (double)bytesPerSecond - _clock.Elapsed.TotalSeconds : 0;
            if (ahead > 0.001)
            {
                await Task.Delay(TimeSpan.FromSeconds(ahead), cancellationToken);
            }
        }
    }
}

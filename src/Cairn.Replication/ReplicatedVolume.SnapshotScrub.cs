using System.Buffers.Binary;
using System.Numerics;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// The owner's scrub of the in-sync replicas' snapshots (invariant 4 for data only a snapshot still holds). Each of the
/// owner's snapshots is verified on every in-sync replica where the owner's copy holds data, with snapshot verify
/// requests (only a bitmap of bad blocks comes back), and a replica's bad block is mended in place from the owner's
/// copy of the same snapshot: the replica takes it only if it is exactly what the block's checksum expects. No ordering
/// with client writes is needed: a snapshot never changes, on any replica (see <see cref="RepairSnapshotBlocksAsync"/>).
/// </summary>
public sealed partial class ReplicatedVolume
{
    /// <summary>
    /// Verifies every in-sync replica's copy of each of the owner's snapshots and mends bad blocks from the owner's copy.
    /// <paramref name="bytesPerSecond"/> above 0 paces each replica's reads. Reports each bad block
    /// (<see cref="BlockRepair.Snapshot"/> and <see cref="BlockRepair.Replica"/> set) and progress in blocks.
    /// </summary>
    public async Task<ReplicaScrubResult> ScrubReplicaSnapshotsAsync(Action<BlockRepair> report, IProgress<long>? blocksVerified = null, long bytesPerSecond = 0,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(report);
        ThrowIfUnavailable();
        var unverified = new Dictionary<string, string>(StringComparer.Ordinal);
        long verified = 0;
        var pacer = new ScrubPacer(bytesPerSecond);
        foreach (var snapshot in Snapshots?.List() ?? [])
        {
            byte[] name = EncodeSnapshotName(snapshot.Name);
            await foreach (var (start, end) in DataRangesAsync(snapshot.Image, cancellationToken))
            {
                for (long at = start / RepairBlockBytes * RepairBlockBytes; at < end; at += ReplicaProtocol.MaxVerifyBytes)
                {
                    ThrowIfUnavailable();
                    var replicas = _membership.InSync.Where(r => !unverified.ContainsKey(r.Replica)).ToArray();
                    var answers = await Task.WhenAll(replicas.Select(r => VerifySnapshotWindowAsync(r, name, snapshot.Name, at, cancellationToken)));
                    for (int i = 0; i < replicas.Length; i++)
                    {
                        if (answers[i].Failure is { } failure)
                        {
                            unverified[replicas[i].Replica] = failure;
                        }
                        for (ulong bad = answers[i].Bad; bad != 0; bad &= bad - 1)
                        {
                            long offset = at + (long)BitOperations.TrailingZeroCount(bad) * RepairBlockBytes;
                            report(await RepairReplicaSnapshotBlockAsync(replicas[i], snapshot, name, offset, cancellationToken) with { Snapshot = snapshot.Name });
                        }
                    }
                    long length = Math.Min(ReplicaProtocol.MaxVerifyBytes, end - at);
                    verified += (length + RepairBlockBytes - 1) / RepairBlockBytes * replicas.Length;
                    blocksVerified?.Report(verified);
                    await pacer.ReadAsync(length, cancellationToken);
                }
            }
        }
        return new ReplicaScrubResult(verified, [.. unverified.Select(u => $"{u.Key}: {u.Value}")]);
    }

    /// <summary>Where <paramref name="device"/> holds data, as [start, end) byte ranges, in order.</summary>
    private static async IAsyncEnumerable<(long Start, long End)> DataRangesAsync(IBlockDevice device,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var extents = new AllocationExtent[ExtentBatch];
        for (long at = 0; at < device.SizeBytes;)
        {
            int count = await device.GetAllocationAsync(at, device.SizeBytes - at, extents, cancellationToken);
            if (count == 0)
            {
                yield break;
            }
            for (int i = 0; i < count && at < device.SizeBytes; i++)
            {
                long length = Math.Min(extents[i].LengthBytes, device.SizeBytes - at);
                if (length <= 0)
                {
                    throw new InvalidOperationException($"the device described an empty extent at offset {at}");
                }
                if (extents[i].State == AllocationState.Data)
                {
                    yield return (at, at + length);
                }
                at += length;
            }
        }
    }

    private async Task<(ulong Bad, string? Failure)> VerifySnapshotWindowAsync(IReplicaChannel replica, byte[] name, string snapshot, long offset,
        CancellationToken cancellationToken)
    {
        byte[] bitmap = new byte[ReplicaProtocol.VerifyReplyBytes];
        var status = await ReadRemoteAsync(replica, ReplicaOp.VerifySnapshot, offset, (uint)name.Length, name, bitmap, cancellationToken);
        return status == ReplicaStatus.Ok
            ? (BinaryPrimitives.ReadUInt64LittleEndian(bitmap), null)
            : (0, $"answered {DescribeFailedSnapshotRead(status, snapshot)} to a verify of snapshot {snapshot} at offset {offset}");
    }

    /// <summary>Sends the owner's good copy of the block; the replica writes it only if its checksum says it is the snapshot's content.</summary>
    private async Task<BlockRepair> RepairReplicaSnapshotBlockAsync(IReplicaChannel replica, SnapshotImage snapshot, byte[] name, long offset,
        CancellationToken cancellationToken)
    {
        const int Block = ReplicaProtocol.SnapshotBlockBytes;
        byte[] payload = new byte[name.Length + Block];
        name.CopyTo(payload, 0);
        int inside = (int)Math.Min(Block, snapshot.Image.SizeBytes - offset);
        try
        {
            await snapshot.Image.ReadAsync(offset, payload.AsMemory(name.Length, inside), cancellationToken); // zeros past the end stay
        }
        catch (BlockDeviceException e)
        {
            return new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable, e.Error == BlockError.Io
                ? "the owner's copy fails too: no good copy to rewrite it from (the owner's scrub mends its own first)"
                : $"the owner's copy could not be read: {e.Message}");
        }
        byte[] outcome = new byte[ReplicaProtocol.RewriteReplyBytes];
        var status = await ReadRemoteAsync(replica, ReplicaOp.RewriteSnapshotBlock, offset, (uint)payload.Length, payload, outcome, cancellationToken);
        if (status != ReplicaStatus.Ok)
        {
            return new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable, $"the replica answered {status} to the rewrite");
        }
        return (SnapshotRewriteOutcome)outcome[0] switch
        {
            SnapshotRewriteOutcome.Rewritten => new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Repaired, "rewritten from the owner's copy"),
            SnapshotRewriteOutcome.AlreadyGood => new BlockRepair(replica.Replica, offset, BlockRepairOutcome.AlreadyGood, "reads correctly now: nothing to rewrite"),
            SnapshotRewriteOutcome.WrongData => new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable,
                "the owner's copy is not what the replica's checksum expects: the two snapshots differ"),
            var other => new BlockRepair(replica.Replica, offset, BlockRepairOutcome.Unrecoverable, $"the replica holds no data block there ({other})"),
        };
    }
}

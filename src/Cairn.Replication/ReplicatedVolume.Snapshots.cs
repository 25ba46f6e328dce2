using System.Buffers;
using Cairn.Core;

namespace Cairn.Replication;

// Snapshots across replicas beyond taking and deleting them: a full rebuild recreates the owner's snapshots on the
// replica before copying the live volume, a snapshot change invalidates what a rebuild or a delta record assumed,
// and a revert leaves every remote either reverted too or marked for a full copy.
public sealed partial class ReplicatedVolume
{
    private long _snapshotGeneration; // bumped (under _controlling) by every snapshot change

    /// <summary>The owner's snapshots, for full rebuilds to copy; null when the local copy keeps none.</summary>
    public ISnapshotImages? Snapshots { get; init; }

    /// <summary>
    /// Reverts the volume to snapshot <paramref name="name"/>, which every in-sync replica holds too. Quiesced, the
    /// remotes are first dropped from the in-sync set (a compare-and-swap that bumps the epoch), then the local copy
    /// reverts through <paramref name="revertLocal"/>, then each remote reverts. A crash at any point leaves only
    /// the owner in sync, so no two in-sync replicas can disagree. A remote that reverted holds what the owner holds:
    /// its record of missed regions starts empty and its resync copies only what is written after the revert; one
    /// that failed to revert is copied in full.
    /// </summary>
    public async Task RevertAsync(string name, Func<ValueTask> revertLocal, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(revertLocal);
        byte[] encoded = EncodeSnapshotName(name);
        await WhileQuiescedAsync(async () =>
        {
            await ForgetRebuildStateAsync($"the volume was reverted to snapshot {name}");
            var remotes = _membership.InSync.ToList();
            if (remotes.Count > 0)
            {
                var revert = new Change(ReplicaOp.RevertToSnapshot, ReplicaFlags.None, 0, encoded.Length, encoded, WriteFlags.None, ZeroFlags.None);
                await DropAsync(remotes, revert, cancellationToken);
            }
            ThrowIfUnavailable();
            await revertLocal();
            await RevertRemotesAsync(remotes, encoded);
        }, beforeResuming: null, cancellationToken);
    }

    /// <summary>Reverts the dropped remotes; those that did revert need only what comes next, the others a full copy.</summary>
    private async Task RevertRemotesAsync(List<IReplicaChannel> remotes, byte[] encoded)
    {
        var reverted = await Task.WhenAll(remotes.Select(async r =>
        {
            try
            {
                return await r.SendAsync(ReplicaOp.RevertToSnapshot, ReplicaFlags.None, 0, (uint)encoded.Length, encoded, default, CancellationToken.None)
                    == ReplicaStatus.Ok;
            }
            catch (ReplicaLinkException)
            {
                return false;
            }
        }));
        await _changing.WaitAsync(CancellationToken.None);
        try
        {
            var current = _membership;
            var tracking = current.Tracking.Where(t => remotes.All(r => !string.Equals(r.Replica, t.Replica, StringComparison.Ordinal))).ToList();
            tracking.AddRange(remotes.Where((r, i) => reverted[i]).Select(r =>
                new Tracked(r.Replica, new DirtyRegionMap(FindTracked(current.Tracking, r.Replica)?.Map.SinceEpoch ?? Epoch))));
            _ = Swap(current.With(tracking: [.. tracking]));
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>
    /// A snapshot change (under <see cref="_controlling"/>, the volume quiesced when it changes data): a replica being
    /// rebuilt would miss it, so its rebuild is abandoned (a later one starts over, snapshots included); a dropped
    /// replica would come back with other snapshots than the owner's, so what it missed is forgotten and its resync
    /// becomes a full copy; and snapshot copies under way are told to start again.
    /// </summary>
    private async Task ForgetRebuildStateAsync(string reason)
    {
        Interlocked.Increment(ref _snapshotGeneration);
        await _changing.WaitAsync(CancellationToken.None);
        try
        {
            var current = _membership;
            foreach (var session in current.Rebuilding)
            {
                session.Fail($"{reason} during the rebuild of replica {session.Channel.Replica}");
            }
            if (current.Tracking.Length > 0)
            {
                _ = Swap(current.With(tracking: []));
            }
        }
        finally
        {
            _changing.Release();
        }
    }

    /// <summary>
    /// Gives a replica about to be copied in full the owner's snapshots: deletes whatever snapshots it holds, then,
    /// oldest first, copies each snapshot's content into its volume and snapshots it there. Runs before the replica
    /// receives live changes, so each of its snapshots holds exactly the owner's. Returns the snapshot generation it
    /// copied: if a snapshot changed meanwhile, <see cref="StartRebuildAsync"/> refuses to go on.
    /// </summary>
    private async Task<long> CopySnapshotsAsync(IReplicaChannel replica, CancellationToken cancellationToken)
    {
        long generation = Interlocked.Read(ref _snapshotGeneration);
        var images = Snapshots?.List() ?? [];
        var status = await SendBeforeRebuildAsync(replica, ReplicaOp.DeleteAllSnapshots, ReplicaFlags.None, 0, 0, default, cancellationToken);
        if (status == ReplicaStatus.NotSupported && images.Count == 0)
        {
            return generation; // a replica that keeps no snapshots needs none
        }
        ThrowUnlessOk(replica, status, ReplicaOp.DeleteAllSnapshots, 0, 0);
        if (images.Count == 0)
        {
            return generation;
        }
        ThrowUnlessOk(replica, await SendBeforeRebuildAsync(replica, ReplicaOp.Grow, ReplicaFlags.None, SizeBytes, 0, default, cancellationToken),
            ReplicaOp.Grow, SizeBytes, 0);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(RebuildChunkBytes);
        var extents = new AllocationExtent[ExtentBatch];
        try
        {
            foreach (var image in images)
            {
                await CopyImageAsync(replica, image.Image, buffer, extents, cancellationToken);
                byte[] encoded = EncodeSnapshotName(image.Name);
                ThrowUnlessOk(replica, await SendBeforeRebuildAsync(replica, ReplicaOp.CreateSnapshot, ReplicaFlags.None, 0, (uint)encoded.Length, encoded,
                    cancellationToken), ReplicaOp.CreateSnapshot, 0, encoded.Length);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return generation;
    }

    /// <summary>
    /// Makes the replica's volume read as <paramref name="image"/>: data as data, holes as trims, zeros as zeroes; the
    /// volume may have grown since the snapshot, and what lies beyond the snapshot's size is trimmed.
    /// </summary>
    private async Task CopyImageAsync(IReplicaChannel replica, IBlockDevice image, byte[] buffer, AllocationExtent[] extents, CancellationToken cancellationToken)
    {
        long size = Math.Min(image.SizeBytes, SizeBytes);
        for (long position = 0; position < size;)
        {
            int count = await image.GetAllocationAsync(position, size - position, extents, cancellationToken);
            if (count == 0)
            {
                throw new ReplicaRebuildException($"a snapshot described no allocation at offset {position}");
            }
            for (int i = 0; i < count && position < size; i++)
            {
                long length = Math.Min(extents[i].LengthBytes, size - position);
                if (length <= 0)
                {
                    throw new ReplicaRebuildException($"a snapshot described an empty extent at offset {position}");
                }
                await CopyImageExtentAsync(replica, image, position, length, extents[i].State, buffer, cancellationToken);
                position += length;
            }
        }
        if (size < SizeBytes)
        {
            await CopyImageExtentAsync(replica, image, size, SizeBytes - size, AllocationState.Hole, buffer, cancellationToken);
        }
    }

    private async Task CopyImageExtentAsync(IReplicaChannel replica, IBlockDevice image, long offset, long length, AllocationState state, byte[] buffer,
        CancellationToken cancellationToken)
    {
        long piece = state == AllocationState.Data ? RebuildChunkBytes : MaxEraseBytes;
        for (long done = 0; done < length; done += piece)
        {
            long at = offset + done;
            int bytes = (int)Math.Min(piece, length - done);
            var (op, flags, payload) = state switch
            {
                AllocationState.Hole => (ReplicaOp.Trim, ReplicaFlags.None, ReadOnlyMemory<byte>.Empty),
                AllocationState.Zero => (ReplicaOp.WriteZeroes, ReplicaFlags.NoHole, ReadOnlyMemory<byte>.Empty),
                _ => (ReplicaOp.Write, CopyFlags(bytes), buffer.AsMemory(0, bytes)), // a rebuild's copy: cold on the replica
            };
            if (op == ReplicaOp.Write)
            {
                await image.ReadAsync(at, buffer.AsMemory(0, bytes), cancellationToken);
            }
            ThrowUnlessOk(replica, await SendBeforeRebuildAsync(replica, op, flags, at, (uint)bytes, payload, cancellationToken), op, at, bytes);
        }
    }

    private static async Task<ReplicaStatus> SendBeforeRebuildAsync(IReplicaChannel replica, ReplicaOp op, ReplicaFlags flags, long offset, uint length,
        ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        try
        {
            return await replica.SendAsync(op, flags, offset, length, payload, default, cancellationToken);
        }
        catch (ReplicaLinkException e)
        {
            throw new ReplicaRebuildException($"replica {replica.Replica} became unreachable while its snapshots were copied: {e.Message}", e);
        }
    }

    private void ThrowUnlessOk(IReplicaChannel replica, ReplicaStatus status, ReplicaOp op, long offset, long length)
    {
        if (status == ReplicaStatus.StaleEpoch)
        {
            Fence($"replica {replica.Replica} has seen a newer epoch than {Epoch}: another owner took over");
            ThrowIfFenced();
        }
        if (status != ReplicaStatus.Ok)
        {
            throw new ReplicaRebuildException($"replica {replica.Replica} answered {status} to a {op} of {length} bytes at offset {offset} while its snapshots were copied");
        }
    }
}

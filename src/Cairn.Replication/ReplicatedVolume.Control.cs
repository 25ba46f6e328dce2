using System.Text;
using Cairn.Core;

namespace Cairn.Replication;

public sealed partial class ReplicatedVolume
{
    private readonly SemaphoreSlim _controlling = new(1, 1); // one grow, snapshot or rebuild start at a time

    /// <summary>
    /// Grows the volume: every in-sync replica first (and every replica being rebuilt), then the local one through
    /// <paramref name="growLocal"/>, so no change beyond the old size is accepted before every replica can hold it.
    /// A replica that fails to grow is dropped like one that fails a write.
    /// </summary>
    public async Task GrowAsync(long newSizeBytes, Func<ValueTask> growLocal, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(growLocal);
        if (newSizeBytes < SizeBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(newSizeBytes), newSizeBytes, $"a volume cannot shrink: it holds {SizeBytes} bytes");
        }
        await _controlling.WaitAsync(cancellationToken);
        try
        {
            ThrowIfUnavailable();
            await ControlRemotesAsync(ReplicaOp.Grow, newSizeBytes, default, rebuildingToo: true, cancellationToken);
            await growLocal();
        }
        finally
        {
            _controlling.Release();
        }
    }

    /// <summary>
    /// Takes a snapshot consistent across replicas: quiesces the volume (changes in flight finish, new ones wait),
    /// flushes the local replica and every in-sync remote, snapshots every in-sync remote, then the local one through
    /// <paramref name="snapshotLocal"/>, and lets changes go on. Every replica's snapshot thus holds exactly the changes
    /// acknowledged before it. A remote that fails is dropped like on a write; a replica being rebuilt cannot take
    /// the snapshot consistently, so its rebuild starts over (and copies the snapshots first). Callers check the name is free first: a remote refusing it is dropped.
    /// </summary>
    public async Task CreateSnapshotAsync(string name, Func<ValueTask> snapshotLocal, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(snapshotLocal);
        byte[] encoded = EncodeSnapshotName(name);
        await WhileQuiescedAsync(async () =>
        {
            ThrowIfUnavailable();
            await ForgetRebuildStateAsync($"snapshot {name} was taken");
            await _local.FlushAsync(cancellationToken);
            await ControlRemotesAsync(ReplicaOp.Flush, 0, default, rebuildingToo: false, cancellationToken);
            await ControlRemotesAsync(ReplicaOp.CreateSnapshot, 0, encoded, rebuildingToo: false, cancellationToken);
            ThrowIfUnavailable();
            await snapshotLocal();
        }, beforeResuming: () => ForgetRebuildStateAsync($"snapshot {name} was taken"), // a replica dropped meanwhile may lack it
        cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="body"/> as the only control operation, with the volume quiesced (changes in flight finished,
    /// new ones waiting); <paramref name="beforeResuming"/>, if any, runs before changes go on, whatever the outcome.
    /// </summary>
    private async Task WhileQuiescedAsync(Func<Task> body, Func<Task>? beforeResuming, CancellationToken cancellationToken)
    {
        await _controlling.WaitAsync(cancellationToken);
        try
        {
            ThrowIfUnavailable();
            var paused = await PauseAsync(cancellationToken);
            try
            {
                await body();
            }
            finally
            {
                if (beforeResuming is not null)
                {
                    await beforeResuming();
                }
                await ResumeAsync(paused);
            }
        }
        finally
        {
            _controlling.Release();
        }
    }

    /// <summary>Deletes a snapshot on every in-sync remote, then locally through <paramref name="deleteLocal"/>. A remote that fails is dropped.</summary>
    public async Task DeleteSnapshotAsync(string name, Func<ValueTask> deleteLocal, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deleteLocal);
        byte[] encoded = EncodeSnapshotName(name);
        await _controlling.WaitAsync(cancellationToken);
        try
        {
            ThrowIfUnavailable();
            await ForgetRebuildStateAsync($"snapshot {name} was deleted");
            await ControlRemotesAsync(ReplicaOp.DeleteSnapshot, 0, encoded, rebuildingToo: false, cancellationToken);
            await deleteLocal();
        }
        finally
        {
            await ForgetRebuildStateAsync($"snapshot {name} was deleted"); // a replica dropped meanwhile may still hold it
            _controlling.Release();
        }
    }

    private static byte[] EncodeSnapshotName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        byte[] encoded = Encoding.UTF8.GetBytes(name);
        if (encoded.Length is 0 or > ReplicaProtocol.MaxNameBytes)
        {
            throw new ArgumentException($"a snapshot name must be 1-{ReplicaProtocol.MaxNameBytes} bytes of UTF-8; \"{name}\" is {encoded.Length}", nameof(name));
        }
        return encoded;
    }

    /// <summary>
    /// Sends one request to every in-sync remote (and, with <paramref name="rebuildingToo"/>, every replica being
    /// rebuilt) at once. Unlike a write, any refusal drops an in-sync remote: it could not follow the volume.
    /// </summary>
    private async Task ControlRemotesAsync(ReplicaOp op, long offset, byte[]? payload, bool rebuildingToo, CancellationToken cancellationToken)
    {
        var membership = _membership;
        var change = new Change(op, ReplicaFlags.None, offset, payload?.Length ?? 0, payload, WriteFlags.None, ZeroFlags.None);
        var replicas = membership.InSync;
        var rebuilding = rebuildingToo ? [.. membership.Rebuilding.Where(r => r.Failure is null)] : Array.Empty<RebuildSession>();
        var sends = replicas.Select(r => SendAsync(r, change, cancellationToken).AsTask())
            .Concat(rebuilding.Select(r => SendToRebuildAsync(r.Channel, change, cancellationToken).AsTask())).ToArray();
        var statuses = await Task.WhenAll(sends);
        List<IReplicaChannel>? failed = null;
        List<RebuildSession>? lost = null;
        for (int i = 0; i < statuses.Length; i++)
        {
            var replica = i < replicas.Length ? replicas[i] : rebuilding[i - replicas.Length].Channel;
            if (statuses[i] == ReplicaStatus.StaleEpoch)
            {
                Fence($"replica {replica.Replica} has seen a newer epoch than {Epoch}: another owner took over");
            }
            else if (statuses[i] != ReplicaStatus.Ok && i < replicas.Length)
            {
                (failed ??= []).Add(replica);
            }
            else if (statuses[i] != ReplicaStatus.Ok)
            {
                (lost ??= []).Add(rebuilding[i - replicas.Length]);
            }
        }
        if (lost is not null)
        {
            await RebuildTargetsFailedAsync(lost, change, failed ??= []);
        }
        ThrowIfFenced();
        if (failed is { Count: > 0 })
        {
            await DropAsync(failed, change, cancellationToken);
        }
    }
}

using System.Runtime.CompilerServices;
using Cairn.Core;

namespace Cairn.Replication;

/// <summary>
/// Client requests and an owner's lease that cannot be proven for a moment. The lease is proven by keep-alives that a
/// busy node can send late (a stalled thread pool, a slow store), so "not proven right now" is often over within a
/// heartbeat or two. Failing the request at once would hand the client an IO error — a filesystem on it goes
/// read-only — for what is a pause. So a request waits, up to <see cref="LeaseWait"/>, for the lease to be proven
/// again, and only then fails. Waiting is safe: the lease counts as held only while its grant is the one this owner
/// proved its epoch under (<see cref="IOwnerLease.Term"/>), and a grant that never expired in the store means the
/// controller cannot have failed the volume over meanwhile. Nothing is served or acknowledged while it is not held.
/// </summary>
public sealed partial class ReplicatedVolume
{
    /// <summary>How often a waiting request looks at the lease again.</summary>
    private static readonly TimeSpan LeasePoll = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// How long a client request waits for a lapsed lease to be proven again before it fails with an IO error. Zero
    /// (the default) fails it at once. An owner sets about the lease's TTL: by then a lease that still cannot be
    /// proven has expired in the store, and the volume is, or is about to be, failed over.
    /// </summary>
    public TimeSpan LeaseWait { get; init; }

    /// <summary>The clock <see cref="LeaseWait"/> is measured on.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Returns once the lease is held; throws when the volume is fenced, or the lease stays lapsed past <see cref="LeaseWait"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask AwaitLeaseAsync(CancellationToken cancellationToken)
    {
        long start = Time.GetTimestamp();
        while (_lease is { IsHeld: false })
        {
            ThrowIfFenced();
            if (Time.GetElapsedTime(start) >= LeaseWait)
            {
                throw LeaseLapsedException();
            }
            await Task.Delay(LeasePoll, Time, cancellationToken);
        }
        ThrowIfFenced();
    }

    /// <summary>A read that arrived while the lease was lapsed: served once it is held again.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadOnceLeaseHeldAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        await AwaitLeaseAsync(cancellationToken);
        await ReadAsync(offset, destination, cancellationToken);
    }

    private BlockDeviceException LeaseLapsedException() => new(BlockError.Io,
        $"the owner can no longer prove its epoch {Epoch}: its lease in the cluster store lapsed for longer than {LeaseWait.TotalSeconds:0.#} s; " +
        "nothing is served or acknowledged until it holds the lease again");
}

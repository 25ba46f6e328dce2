using Cairn.Core.Transport;

namespace Cairn.Core.Tests;

/// <summary>
/// The IO thread's own contract: continuations of IO it completes run on it, so whatever an owner does in them (dispose
/// the loops, defer more work) must work from there.
/// </summary>
public sealed class EpollLoopTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    /// <summary>
    /// An owner that awaits IO completed on an IO thread and then disposes the loops runs that Dispose on the IO thread
    /// itself. It used to join its own thread and hang forever (the NBD IO-thread completion tests hung so, in cleanup).
    /// </summary>
    [Fact]
    public async Task Disposing_the_loops_from_a_continuation_on_their_own_io_thread_returns_and_stops_the_thread()
    {
        if (!EpollLoop.IsSupported)
        {
            return;
        }
        var loops = new EpollLoopGroup("dispose-self", _ => { }, count: 1);
        var (peer, transport) = LoopbackPair.Connect(loops);
        using var _peer = peer;
        var disposedOn = new TaskCompletionSource<Thread>(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task ReceiveThenDisposeAsync()
        {
            await transport.ReceiveAsync(new byte[16]); // nothing sent yet: parks, and finishes on the IO thread
            var thread = Thread.CurrentThread;
            transport.Close();
            loops.Dispose();
            disposedOn.SetResult(thread);
        }

        var receiving = ReceiveThenDisposeAsync();
        peer.Send([1]);
        var ioThread = await disposedOn.Task.WaitAsync(Deadline);
        Assert.StartsWith("dispose-self-io", ioThread.Name);
        Assert.True(ioThread.Join(Deadline), "the IO thread kept running after its loops were disposed");
        await receiving.WaitAsync(Deadline);
        loops.Dispose(); // a second Dispose (the owner's usual one) is a no-op
    }

    /// <summary>
    /// An NBD connection's deferred flush can be scheduled by work that itself runs at the end of a batch (a reply
    /// finished there): such work must run in the same drain. Left for the next batch, it would wait for an event that
    /// may never come, since the peer is waiting for that very reply.
    /// </summary>
    [Fact]
    public async Task Work_deferred_while_end_of_batch_work_runs_is_run_in_the_same_drain()
    {
        if (!EpollLoop.IsSupported)
        {
            return;
        }
        using var loops = new EpollLoopGroup("defer-drain", _ => { }, count: 1);
        var (peer, transport) = LoopbackPair.Connect(loops);
        using var _peer = peer;
        var innerRan = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var inner = new Work(() => innerRan.TrySetResult(true));
        var outer = new Work(() =>
        {
            if (!EpollLoop.TryDeferToEndOfBatch(inner))
            {
                innerRan.TrySetResult(false);
            }
        });
        var outerDeferred = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task ReceiveThenDeferAsync()
        {
            await transport.ReceiveAsync(new byte[16]);
            outerDeferred.SetResult(EpollLoop.TryDeferToEndOfBatch(outer));
        }

        Assert.False(EpollLoop.TryDeferToEndOfBatch(outer), "a thread that is not an IO thread has no batch to defer to");
        var receiving = ReceiveThenDeferAsync();
        peer.Send([1]); // the only event: nothing else would start another batch
        Assert.True(await outerDeferred.Task.WaitAsync(Deadline), "the receive did not complete on the IO thread");
        Assert.True(await innerRan.Task.WaitAsync(Deadline), "work deferred during the drain was refused");
        await receiving.WaitAsync(Deadline);
        transport.Close();
    }

    private sealed class Work(Action action) : IThreadPoolWorkItem
    {
        public void Execute() => action();
    }
}

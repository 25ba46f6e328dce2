namespace Cairn.Replication.Tests;

public sealed class RegionGateTests
{
    [Fact]
    public async Task The_copier_waits_for_live_changes_in_its_window_and_holds_back_new_ones_until_it_leaves()
    {
        var gate = new RegionGate();
        await gate.EnterLiveAsync(0, 10);

        var copier = gate.EnterCopyAsync(5, 15, CancellationToken.None).AsTask();
        Assert.False(copier.IsCompleted, "the copier entered a window a live change still writes");
        var blocked = gate.EnterLiveAsync(12, 13).AsTask();
        Assert.False(blocked.IsCompleted, "a live change entered the window the copier waits for");
        await gate.EnterLiveAsync(20, 30); // elsewhere: at once

        gate.ExitLive(0, 10);
        await copier.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(blocked.IsCompleted);
        gate.ExitCopy();
        await blocked.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Changes_that_waited_for_the_copier_enter_before_its_next_window()
    {
        var gate = new RegionGate();
        await gate.EnterCopyAsync(0, 100, CancellationToken.None);
        var waiting = gate.EnterLiveAsync(50, 150).AsTask();

        gate.ExitCopy();
        var next = gate.EnterCopyAsync(100, 200, CancellationToken.None).AsTask();
        await waiting.WaitAsync(TimeSpan.FromSeconds(30)); // entered: the copier did not starve it
        Assert.False(next.IsCompleted, "the copier took a window a live change holds");
        gate.ExitLive(50, 150);
        await next.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_cancelled_copier_leaves_its_window()
    {
        var gate = new RegionGate();
        await gate.EnterLiveAsync(0, 10);
        using var cancel = new CancellationTokenSource();
        var copier = gate.EnterCopyAsync(0, 10, cancel.Token).AsTask();
        var blocked = gate.EnterLiveAsync(5, 6).AsTask();

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => copier);
        await blocked.WaitAsync(TimeSpan.FromSeconds(30));
    }
}

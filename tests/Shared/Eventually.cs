using System.Diagnostics;

namespace Cairn.Testing;

/// <summary>Polls a condition until it holds or a deadline passes: waits with deadlines, never fixed sleeps.</summary>
internal static class Eventually
{
    public static async Task<TimeSpan> HoldsAsync(Func<Task<bool>> condition, TimeSpan deadline, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > deadline)
            {
                throw new TimeoutException($"{what}: not within {deadline.TotalSeconds:0.#} s");
            }
            await Task.Delay(25);
        }
        return clock.Elapsed;
    }

    public static Task<TimeSpan> HoldsAsync(Func<bool> condition, TimeSpan deadline, string what) =>
        HoldsAsync(() => Task.FromResult(condition()), deadline, what);
}

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

    /// <summary>Like <see cref="HoldsAsync(Func{Task{bool}}, TimeSpan, string)"/> for conditions asked of a node's API:
    /// a node between lives (connection refused) just means "not yet".</summary>
    public static Task<TimeSpan> HoldsOverHttpAsync(Func<Task<bool>> condition, TimeSpan deadline, string what) =>
        HoldsAsync(async () =>
        {
            try
            {
                return await condition();
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, deadline, what);

    public static Task<TimeSpan> HoldsAsync(Func<bool> condition, TimeSpan deadline, string what) =>
        HoldsAsync(() => Task.FromResult(condition()), deadline, what);
}

using System.Globalization;
using Spectre.Console;

namespace Cairn.Cli;

internal sealed partial class Output
{
    public void Snapshots(string volume, IReadOnlyList<SnapshotDto> snapshots)
    {
        if (snapshots.Count == 0)
        {
            Line($"Volume '{volume}' has no snapshots. Take one with: cairn snapshot create {volume} NAME");
            return;
        }
        var table = NewTable("NAME", "CREATED", "SIZE", "EXCLUSIVE", "SHARED", "EXPORT");
        foreach (var s in snapshots)
        {
            table.AddRow(Cells(s.Name, When(s.CreatedAt), s.Size, s.Exclusive, s.Shared, s.Export ?? "-"));
        }
        _console.Write(table);
    }

    /// <summary>
    /// Follows a scrub until it ends: a Spectre progress bar on a terminal; in pipes and logs a line per tenth, which
    /// scripts can read. Returns the final status.
    /// </summary>
    public async Task<ScrubDto> FollowScrubAsync(ScrubDto started, Func<CancellationToken, Task<ScrubDto>> poll, TimeSpan interval, CancellationToken ct)
    {
        if (_console.Profile.Capabilities.Ansi)
        {
            ScrubDto status = started;
            await _console.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .StartAsync(async context =>
                {
                    var bar = context.AddTask($"scrub {started.Volume}", maxValue: 1);
                    while (status.State == "Running")
                    {
                        await Task.Delay(interval, ct);
                        status = await poll(ct);
                        bar.MaxValue = Math.Max(1, status.BlocksTotal);
                        bar.Value = status.BlocksChecked;
                    }
                    bar.Value = bar.MaxValue;
                });
            return status;
        }
        return await FollowScrubPlainAsync(started, poll, interval, ct);
    }

    private async Task<ScrubDto> FollowScrubPlainAsync(ScrubDto status, Func<CancellationToken, Task<ScrubDto>> poll, TimeSpan interval, CancellationToken ct)
    {
        int shownTenths = -1;
        while (status.State == "Running")
        {
            int tenths = status.BlocksTotal == 0 ? 0 : (int)(status.BlocksChecked * 10 / status.BlocksTotal);
            if (tenths > shownTenths)
            {
                Line($"scrub {status.Volume}: {tenths * 10}% ({status.BlocksChecked}/{status.BlocksTotal} blocks, {status.ErrorCount} errors)");
                shownTenths = tenths;
            }
            await Task.Delay(interval, ct);
            status = await poll(ct);
        }
        return status;
    }

    public void ScrubResult(ScrubDto s)
    {
        if (s.State == "Failed")
        {
            Line($"Scrub of volume '{s.Volume}' failed: {s.Failure}");
            return;
        }
        string took = s.FinishedAt is { } end ? $" in {(end - s.StartedAt).TotalSeconds.ToString("F1", CultureInfo.InvariantCulture)} s" : "";
        string repairs = s.ErrorCount == 0 ? "" : $": {s.RepairedCount} repaired from good copies, {s.StillBad} unrecoverable";
        Line($"Scrubbed volume '{s.Volume}' and its snapshots: {s.BlocksChecked} blocks verified{took}, {s.ErrorCount} bad{repairs}.");
        if (s.Errors is not { Count: > 0 } errors)
        {
            return;
        }
        var table = NewTable("DEVICE", "NODE", "OFFSET", "PHYSICAL BLOCK", "PROBLEM", "REPAIR");
        foreach (var e in errors)
        {
            table.AddRow(Cells(e.Device, e.Node ?? "-", e.OffsetBytes.ToString(CultureInfo.InvariantCulture),
                e.PhysicalBlock?.ToString(CultureInfo.InvariantCulture) ?? "-", e.Problem, e.Repair ?? "-"));
        }
        _console.Write(table);
    }
}

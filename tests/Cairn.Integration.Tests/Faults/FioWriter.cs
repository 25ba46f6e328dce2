using System.Diagnostics;
using System.Globalization;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// fio over NBD (libnbd engine): random writes of every block once with --verify=crc32c headers and a completion
/// log (--write_lat_log --log_offset=1) that names each acknowledged write. Only for runs whose owner keeps answering:
/// fio 3.33's nbd engine spins forever once its server dies ("nothing to poll for in state DEAD"), so a watchdog kills
/// it on that line, and such runs use <see cref="LedgerWriter"/> instead.
/// </summary>
internal sealed class FioWriter(FaultPlan plan, string uri, string workDirectory)
{
    private string LogPrefix => Path.Combine(workDirectory, $"fio-{plan.Seed}");

    public bool CompletedEveryWrite { get; private set; }

    public string Output { get; private set; } = "";

    private IEnumerable<string> JobArguments(bool verifyOnly)
    {
        yield return "--name=fault";
        yield return "--ioengine=nbd";
        yield return $"--uri={uri}";
        yield return "--rw=randwrite";
        yield return $"--bs={plan.BlockBytes}";
        yield return $"--iodepth={plan.IoDepth}";
        yield return $"--size={plan.VolumeBytes}";
        yield return "--verify=crc32c";
        yield return $"--randseed={plan.Seed}";
        if (verifyOnly)
        {
            yield return "--verify_only";
            yield break;
        }
        yield return "--do_verify=0";
        // Stretch the writes over about four seconds so that the fault lands in the middle of them.
        yield return $"--rate_iops={plan.WritesPerSecond}";
        yield return $"--write_lat_log={LogPrefix}";
        yield return "--log_offset=1";
    }

    /// <summary>Runs the writes to the end (or to fio's failure) and returns what was acknowledged.</summary>
    public async Task<AcknowledgedWrites> RunAsync(TimeSpan deadline)
    {
        var start = new ProcessStartInfo(ToolRun.ResolveOrThrow("fio")) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in JobArguments(verifyOnly: false))
        {
            start.ArgumentList.Add(argument);
        }
        using var fio = Process.Start(start) ?? throw new InvalidOperationException("cannot start fio");
        var stdout = fio.StandardOutput.ReadToEndAsync();
        bool spinning = false;
        var stderr = Task.Run(async () =>
        {
            var kept = new System.Text.StringBuilder();
            while (await fio.StandardError.ReadLineAsync() is { } line)
            {
                if (line.Contains("state DEAD", StringComparison.Ordinal) && !spinning)
                {
                    spinning = true;
                    fio.Kill(); // it would loop forever and fill the disk with this line
                }
                if (kept.Length < 4000)
                {
                    kept.AppendLine(line);
                }
            }
            return kept.ToString();
        });
        using var cts = new CancellationTokenSource(deadline);
        try
        {
            await fio.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            fio.Kill();
            await fio.WaitForExitAsync(CancellationToken.None);
            throw new TimeoutException($"fio did not finish within {deadline.TotalSeconds} s:\n{await stderr}");
        }
        Output = $"{await stdout}\n{await stderr}";
        if (spinning)
        {
            throw new InvalidOperationException($"fio lost its NBD server and had to be killed (its completion log is gone); use LedgerWriter for this fault\n{Output}");
        }
        CompletedEveryWrite = fio.ExitCode == 0;
        return ReadCompletionLog();
    }

    /// <summary>fio's own verify pass, over the whole volume: only meaningful when every write was acknowledged.</summary>
    public async Task<ToolResult> VerifyWithFioAsync(string currentUri) =>
        await ToolRun.RunAsync("fio", new FioWriter(plan, currentUri, workDirectory).JobArguments(verifyOnly: true), TimeSpan.FromMinutes(3));

    /// <summary>Each line of the completion log: msec, latency, direction (1 = write), block size, offset.</summary>
    private AcknowledgedWrites ReadCompletionLog()
    {
        var acknowledged = new AcknowledgedWrites(plan.BlockBytes);
        string path = $"{LogPrefix}_clat.1.log";
        if (!File.Exists(path))
        {
            return acknowledged; // fio failed before any completion
        }
        foreach (string line in File.ReadLines(path))
        {
            string[] fields = line.Split(',', StringSplitOptions.TrimEntries);
            if (fields.Length >= 5 && fields[2] == "1")
            {
                acknowledged.Add(long.Parse(fields[4], CultureInfo.InvariantCulture));
            }
        }
        return acknowledged;
    }
}

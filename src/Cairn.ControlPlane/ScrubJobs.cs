using Cairn.BlockStore;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

/// <summary>
/// Scrubs run as background jobs, one per volume at a time: the API starts one and polls its progress and result.
/// The last result of each volume is kept until the next scrub of it starts.
/// </summary>
internal sealed class ScrubJobs(Func<string, (string VolumeId, ISnapshotPool Pool)> resolve, TimeProvider time, ILogger logger)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Job> _jobs = new(StringComparer.Ordinal);

    /// <summary>Starts a scrub, or returns the one already running on the volume.</summary>
    public ScrubStatus Start(string? volume, long bytesPerSecond)
    {
        VolumeNames.Validate(volume);
        if (bytesPerSecond < 0)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, $"rate must be positive (bytes per second) or 0 for unpaced, not {bytesPerSecond}", "rate");
        }
        var (id, pool) = resolve(volume);
        lock (_lock)
        {
            if (_jobs.TryGetValue(volume, out var running) && running.FinishedAt is null)
            {
                return running.Status(volume);
            }
            var job = new Job(time.GetUtcNow());
            _jobs[volume] = job;
            job.Task = Task.Run(() => Run(volume, id, pool, bytesPerSecond, job));
            return job.Status(volume);
        }
    }

    public ScrubStatus Get(string? volume)
    {
        VolumeNames.Validate(volume);
        resolve(volume); // 404 for an unknown volume before "never scrubbed"
        lock (_lock)
        {
            return _jobs.TryGetValue(volume, out var job)
                ? job.Status(volume)
                : throw new CairnException(CairnErrorCode.NotFound, $"volume '{volume}' has not been scrubbed since cairnd started; start one with POST .../scrub", "name");
        }
    }

    /// <summary>Completes when the volume's current scrub (if any) has finished.</summary>
    public Task WaitAsync(string volume)
    {
        lock (_lock)
        {
            return _jobs.TryGetValue(volume, out var job) ? job.Task : Task.CompletedTask;
        }
    }

    private void Run(string volume, string id, ISnapshotPool pool, long bytesPerSecond, Job job)
    {
        try
        {
            var result = pool.ScrubVolume(id, job, bytesPerSecond, CancellationToken.None);
            job.Finish(result, null, time.GetUtcNow());
            if (result.ErrorCount > 0)
            {
                logger.LogError("scrub of volume {Volume}: {Errors} bad blocks in {Blocks} checked; first: {First}", volume, result.ErrorCount, result.BlocksChecked, result.Errors[0]);
            }
            else
            {
                logger.LogInformation("scrub of volume {Volume}: {Blocks} blocks verified, no errors, {Seconds:F1} s", volume, result.BlocksChecked, result.Elapsed.TotalSeconds);
            }
        }
        catch (Exception e)
        {
            job.Finish(null, e.Message, time.GetUtcNow());
            logger.LogError(e, "scrub of volume {Volume} failed", volume);
        }
    }

    private sealed class Job(DateTimeOffset startedAt) : IProgress<ScrubProgress>
    {
        private ScrubProgress _progress = new(0, 0, 0);
        private ScrubResult? _result;
        private string? _failure;

        public Task Task { get; set; } = Task.CompletedTask;
        public DateTimeOffset? FinishedAt { get; private set; }

        public void Report(ScrubProgress value) => Volatile.Write(ref _progress, value);

        public void Finish(ScrubResult? result, string? failure, DateTimeOffset at)
        {
            _result = result;
            _failure = failure;
            FinishedAt = at;
        }

        public ScrubStatus Status(string volume)
        {
            var p = Volatile.Read(ref _progress);
            if (_result is { } r)
            {
                return new ScrubStatus(volume, "Finished", r.BlocksChecked, r.BlocksChecked, r.ErrorCount,
                    [.. r.Errors.Select(e => new ScrubErrorInfo(e.Device, e.OffsetBytes, e.PhysicalBlock, e.Problem))], startedAt, FinishedAt, null);
            }
            return new ScrubStatus(volume, _failure is null ? "Running" : "Failed", p.BlocksChecked, p.BlocksTotal, p.Errors, [], startedAt, FinishedAt, _failure);
        }
    }
}

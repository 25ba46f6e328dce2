using Cairn.BlockStore;
using Cairn.Replication;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

/// <summary>What a scrub of one volume works on: its data in this node's pool and, when replicated, the owner's engine that repairs.</summary>
internal sealed record ScrubSubject(string VolumeId, ISnapshotPool Pool, ReplicatedVolume? Replicated, string? Node);

/// <summary>
/// Scrubs run as background jobs, one per volume at a time: the API starts one and polls its progress and result.
/// The last result of each volume is kept until the next scrub of it starts.
/// </summary>
internal sealed class ScrubJobs(Func<string, ScrubSubject> resolve, TimeProvider time, ILogger logger)
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
        var subject = resolve(volume);
        lock (_lock)
        {
            if (_jobs.TryGetValue(volume, out var running) && running.FinishedAt is null)
            {
                return running.Status(volume);
            }
            var job = new Job(time.GetUtcNow());
            _jobs[volume] = job;
            job.Task = Task.Run(() => RunAsync(volume, subject, bytesPerSecond, job));
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

    private async Task RunAsync(string volume, ScrubSubject subject, long bytesPerSecond, Job job)
    {
        try
        {
            var scrub = new VolumeScrub(subject.Pool, subject.VolumeId, subject.Replicated, subject.Node, logger);
            var result = await scrub.RunAsync(job, bytesPerSecond, CancellationToken.None);
            job.Finish(result, null, time.GetUtcNow());
            if (result.ErrorCount > 0)
            {
                logger.Log(result.UnrecoverableCount > 0 ? LogLevel.Error : LogLevel.Warning,
                    "scrub of volume {Volume}: {Errors} bad blocks in {Blocks} checked: {Repaired} repaired from good copies, {Unrecoverable} unrecoverable; first: {First}",
                    volume, result.ErrorCount, result.BlocksChecked, result.RepairedCount, result.UnrecoverableCount, result.Errors[0]);
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
        private ScrubReport? _result;
        private string? _failure;

        public Task Task { get; set; } = Task.CompletedTask;
        public DateTimeOffset? FinishedAt { get; private set; }

        public void Report(ScrubProgress value) => Volatile.Write(ref _progress, value);

        public void Finish(ScrubReport? result, string? failure, DateTimeOffset at)
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
                return new ScrubStatus(volume, "Finished", r.BlocksChecked, r.BlocksChecked, r.ErrorCount, r.Errors, startedAt, FinishedAt, null,
                    r.RepairedCount, r.UnrecoverableCount);
            }
            return new ScrubStatus(volume, _failure is null ? "Running" : "Failed", p.BlocksChecked, p.BlocksTotal, p.Errors, [], startedAt, FinishedAt, _failure);
        }
    }
}

using System.Diagnostics.CodeAnalysis;
using Cairn.BlockStore;
using Cairn.ClusterStore;
using Cairn.Core;
using Cairn.Engine;
using Microsoft.Extensions.Logging;

namespace Cairn.ControlPlane;

// Snapshots, clones and reverts. Snapshots live only in the pool (see ISnapshotPool): creating or deleting one is
// a single atomic pool operation, so there is nothing to reconcile. A clone is a volume: its spec (with its source)
// is written first, then the pool clones, and startup reconcile finishes a clone a crash interrupted.
public sealed partial class VolumeService
{
    /// <summary>Separates volume and snapshot in an export name: VOLUME@SNAPSHOT is the snapshot's read-only export.</summary>
    public const char SnapshotSeparator = '@';

    private readonly Dictionary<string, List<ExportSession>> _snapshotSessions = new(StringComparer.Ordinal);

    public async Task<SnapshotDetails> CreateSnapshotAsync(string? volume, string? snapshot, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(volume);
        ValidateSnapshotName(snapshot, "name");
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var (state, pool) = SnapshotCapable(volume);
            if (pool.ListSnapshots(state.Spec.Id).Any(s => s.Name == snapshot))
            {
                throw new CairnException(CairnErrorCode.AlreadyExists, $"volume '{volume}' already has a snapshot named '{snapshot}'; pick another name", "name");
            }
            SnapshotInfo? info = null;
            await ReplicatedAsync(state, r => r.CreateSnapshotAsync(snapshot, Local, cancellationToken), Local, "take a snapshot of");
            ValueTask Local()
            {
                info = Storage(state, () => pool.CreateSnapshot(state.Spec.Id, snapshot), "take a snapshot of");
                return ValueTask.CompletedTask;
            }
            _logger.LogInformation("took snapshot {Volume}@{Snapshot}", volume, snapshot);
            return Describe(state.Spec.Name, info!);
        }
        finally
        {
            _mutations.Release();
        }
    }

    public IReadOnlyList<SnapshotDetails> ListSnapshots(string? volume)
    {
        VolumeNames.Validate(volume);
        var (state, pool) = SnapshotCapable(volume);
        return [.. pool.ListSnapshots(state.Spec.Id).Select(s => Describe(state.Spec.Name, s))];
    }

    public SnapshotDetails GetSnapshot(string? volume, string? snapshot)
    {
        var (state, pool) = ExistingSnapshot(volume, snapshot);
        return Describe(state.Spec.Name, pool.ListSnapshots(state.Spec.Id).First(s => s.Name == snapshot));
    }

    /// <summary>Validates both names and finds the volume's pool; 404 naming the field when either does not exist.</summary>
    private (VolumeState State, ISnapshotPool Pool) ExistingSnapshot([NotNull] string? volume, [NotNull] string? snapshot)
    {
        VolumeNames.Validate(volume);
        ValidateSnapshotName(snapshot, "snapshot");
        var (state, pool) = SnapshotCapable(volume);
        if (!pool.ListSnapshots(state.Spec.Id).Any(s => s.Name == snapshot))
        {
            throw SnapshotNotFound(volume, snapshot);
        }
        return (state, pool);
    }

    /// <summary>Deletes a snapshot; refused while clients read its export unless <paramref name="force"/>, which disconnects them.</summary>
    public async Task DeleteSnapshotAsync(string? volume, string? snapshot, bool force, CancellationToken cancellationToken = default)
    {
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var (state, pool) = ExistingSnapshot(volume, snapshot);
            var revoked = TakeSnapshotSessions($"{volume}{SnapshotSeparator}{snapshot}", force);
            foreach (var session in revoked)
            {
                session.Revoke();
            }
            await ReplicatedAsync(state, r => r.DeleteSnapshotAsync(snapshot, Local, cancellationToken), Local, $"delete snapshot '{snapshot}' of");
            ValueTask Local()
            {
                Storage(state, () => pool.DeleteSnapshot(state.Spec.Id, snapshot), $"delete snapshot '{snapshot}' of");
                return ValueTask.CompletedTask;
            }
            _logger.LogInformation("deleted snapshot {Volume}@{Snapshot}; its space comes back in the background", volume, snapshot);
        }
        finally
        {
            _mutations.Release();
        }
    }

    /// <summary>Makes a volume's content a snapshot's again. Refused while clients are connected unless <paramref name="force"/>, which disconnects them.</summary>
    public async Task<VolumeInfo> RevertAsync(string? volume, string? snapshot, bool force, CancellationToken cancellationToken = default)
    {
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var (state, pool) = ExistingSnapshot(volume, snapshot);
            List<ExportSession> revoked;
            lock (_lock)
            {
                if (state.Sessions.Count > 0 && !force)
                {
                    string clients = string.Join(", ", state.Sessions.Select(s => s.ClientDescription));
                    throw new CairnException(CairnErrorCode.Busy,
                        $"volume '{volume}' has {state.Sessions.Count} connected client(s) ({clients}); their caches would not match the reverted data. Disconnect them first or revert with force");
                }
                revoked = [.. state.Sessions];
            }
            foreach (var session in revoked)
            {
                session.Revoke();
            }
            await ReplicatedAsync(state, r => r.RevertAsync(snapshot, Local, cancellationToken), Local, $"revert to snapshot '{snapshot}'");
            ValueTask Local()
            {
                Storage(state, () => pool.RevertVolume(state.Spec.Id, snapshot), $"revert to snapshot '{snapshot}'");
                return ValueTask.CompletedTask;
            }
            _logger.LogInformation("reverted volume {Volume} to snapshot {Snapshot}; disconnected {Sessions} clients", volume, snapshot, revoked.Count);
            return Describe(state);
        }
        finally
        {
            _mutations.Release();
        }
    }

    /// <summary>Creates volume <paramref name="name"/> from a snapshot in constant time; <paramref name="sizeBytes"/> null keeps the snapshot's size.</summary>
    public async Task<VolumeInfo> CloneAsync(string? name, string? sourceVolume, string? sourceSnapshot, long? sizeBytes, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(name);
        if (!VolumeNames.TryValidate(sourceVolume, "source volume name", out string error))
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, error, "source.volume");
        }
        ValidateSnapshotName(sourceSnapshot, "source.snapshot");
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            if (Find(name) is not null)
            {
                throw AlreadyExists(name);
            }
            var (source, pool) = SnapshotCapable(sourceVolume, "source.volume");
            var snapshot = pool.ListSnapshots(source.Spec.Id).FirstOrDefault(s => s.Name == sourceSnapshot)
                ?? throw SnapshotNotFound(sourceVolume, sourceSnapshot, "source.snapshot");
            long size = sizeBytes ?? snapshot.SizeBytes;
            ValidateSize(size);
            if (size < snapshot.SizeBytes)
            {
                throw new CairnException(CairnErrorCode.InvalidArgument,
                    $"size {ByteSize.Format(size)} is smaller than snapshot '{sourceVolume}@{sourceSnapshot}' ({ByteSize.Format(snapshot.SizeBytes)}); a clone can only be as large or larger", "size");
            }
            return await CommitCloneAsync(name, source, pool, sourceSnapshot, size, cancellationToken);
        }
        finally
        {
            _mutations.Release();
        }
    }

    private async Task<VolumeInfo> CommitCloneAsync(string name, VolumeState source, ISnapshotPool pool, string snapshot, long size, CancellationToken cancellationToken)
    {
        var spec = new VolumeSpec(name, Guid.NewGuid().ToString("N"), size, source.Spec.Pool, _time.GetUtcNow(), _ownership.NodeName,
            Source: new VolumeSource(source.Spec.Name, snapshot, source.Spec.Id));
        var result = await _store.CommitAsync(Transaction.If(Compare.Missing(KeyOf(name))).Then(TxnOp.Put(KeyOf(name), Serialize(spec))), cancellationToken);
        if (!result.Succeeded)
        {
            throw AlreadyExists(name);
        }
        StoredVolume stored;
        try
        {
            stored = CloneStored(pool, spec);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            await UndoCreateAsync(spec, result.Revision);
            throw new CairnException(CairnErrorCode.Unavailable, $"pool '{spec.Pool}' could not clone '{source.Spec.Name}@{snapshot}' as '{name}': {e.Message}", inner: e);
        }
        var state = new VolumeState(spec, result.Revision, stored);
        lock (_lock)
        {
            _volumes[name] = state;
        }
        _logger.LogInformation("cloned {Source}@{Snapshot} as volume {Volume} ({SizeBytes} bytes)", source.Spec.Name, snapshot, name, size);
        return Describe(state);
    }

    private static StoredVolume CloneStored(ISnapshotPool pool, VolumeSpec spec)
    {
        var stored = pool.CloneVolume(spec.Id, spec.Source!.VolumeId, spec.Source.Snapshot);
        if (stored.SizeBytes < spec.SizeBytes)
        {
            stored.Grow(spec.SizeBytes);
        }
        return stored;
    }

    /// <summary>Reconcile: a clone's spec without data (a crash came between the two). Cloned again if the source snapshot is still there.</summary>
    private StoredVolume? FinishClone(VolumeSpec spec, IVolumePool pool)
    {
        var source = spec.Source!;
        if (pool is ISnapshotPool snapshots && snapshots.TryGetSnapshot(source.VolumeId, source.Snapshot, out _))
        {
            _logger.LogWarning("reconcile: clone {Volume} of {Source}@{Snapshot} has a spec but no data (a clone was interrupted); cloning it", spec.Name, source.Volume, source.Snapshot);
            return CloneStored(snapshots, spec);
        }
        _logger.LogError("reconcile: clone {Volume} has a spec but no data, and its source {Source}@{Snapshot} is gone; it stays unavailable (delete it)",
            spec.Name, source.Volume, source.Snapshot);
        return null;
    }

    /// <summary>Starts a background scrub of the volume and its snapshots (or returns the one running); <paramref name="bytesPerSecond"/> 0 = unpaced.</summary>
    public ScrubStatus StartScrub(string? volume, long bytesPerSecond = 0) => Scrubs.Start(volume, bytesPerSecond);

    /// <summary>The running or last scrub of the volume: progress, then blocks checked and bad blocks found, with where.</summary>
    public ScrubStatus GetScrub(string? volume) => Scrubs.Get(volume);

    /// <summary>
    /// The background schedule (cairnd --scrub-interval): every <paramref name="interval"/>, scrubs each volume of this
    /// node in turn at <paramref name="bytesPerSecond"/>, so bit rot is found before a client reads it.
    /// </summary>
    public async Task RunScrubScheduleAsync(TimeSpan interval, long bytesPerSecond, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            await Task.Delay(interval, _time, cancellationToken);
            foreach (var volume in List().Where(v => v.Available).Select(v => v.Name))
            {
                try
                {
                    StartScrub(volume, bytesPerSecond);
                    await Scrubs.WaitAsync(volume).WaitAsync(cancellationToken);
                }
                catch (CairnException e)
                {
                    _logger.LogWarning("scheduled scrub of volume {Volume} skipped: {Reason}", volume, e.Message);
                }
            }
        }
    }

    private ScrubJobs Scrubs => LazyInitializer.EnsureInitialized(ref _scrubJobs, () => new ScrubJobs(volume =>
    {
        var (state, pool) = SnapshotCapable(volume);
        return new ScrubSubject(state.Spec.Id, pool, state.Replicated?.Device, _replication?.Node);
    }, _time, _logger));

    private ScrubJobs? _scrubJobs;

    private (VolumeState State, ISnapshotPool Pool) SnapshotCapable(string volume, string field = "name")
    {
        var state = Find(volume) ?? throw new CairnException(CairnErrorCode.NotFound, $"no volume named '{volume}'", field);
        if (state.Volume is null || _pools.Find(state.Spec.Pool) is not ISnapshotPool pool)
        {
            throw PoolUnavailable(state.Spec);
        }
        return (state, pool);
    }

    /// <summary>
    /// Runs a snapshot change on every in-sync replica at one point in the volume's write order (the replicated device
    /// quiesces writes around it), or only locally for a volume with one copy. A replica that fails is dropped from the
    /// in-sync set like after a failed write; the snapshot then exists on the others.
    /// </summary>
    private static async Task ReplicatedAsync(VolumeState state, Func<Cairn.Replication.ReplicatedVolume, Task> replicated, Func<ValueTask> local, string what)
    {
        if (state.Replicated is not { } replication)
        {
            await local();
            return;
        }
        try
        {
            await replicated(replication.Device);
        }
        catch (BlockDeviceException e)
        {
            throw new CairnException(CairnErrorCode.Unavailable, $"could not {what} replicated volume '{state.Spec.Name}': {e.Message}", inner: e);
        }
    }

    private static T Storage<T>(VolumeState state, Func<T> operation, string what)
    {
        try
        {
            return operation();
        }
        catch (Exception e) when (e is IOException or BlockDeviceException or InvalidOperationException or KeyNotFoundException)
        {
            throw new CairnException(CairnErrorCode.Unavailable, $"pool '{state.Spec.Pool}' could not {what} volume '{state.Spec.Name}': {e.Message}", inner: e);
        }
    }

    private static void Storage(VolumeState state, Action operation, string what) => Storage(state, () =>
    {
        operation();
        return 0;
    }, what);

    private SnapshotDetails Describe(string volume, SnapshotInfo info)
    {
        string export = $"{volume}{SnapshotSeparator}{info.Name}";
        IReadOnlyList<ClientInfo> clients;
        lock (_lock)
        {
            clients = _snapshotSessions.TryGetValue(export, out var sessions) ? [.. sessions.Select(s => new ClientInfo(s.ClientDescription, s.OpenedAt))] : [];
        }
        return new SnapshotDetails(volume, info.Name, info.CreatedAt, info.SizeBytes, info.ReferencedBytes, info.ExclusiveBytes, info.SharedBytes,
            _addresses.NbdAddressFor(export), clients);
    }

    /// <summary>Opens VOLUME@SNAPSHOT read-only (the NBD frontend advertises it read-only; writes fail with EPERM).</summary>
    private ExportSession? TryOpenSnapshot(string exportName, string clientDescription)
    {
        int at = exportName.IndexOf(SnapshotSeparator, StringComparison.Ordinal);
        string volume = exportName[..at];
        string snapshot = exportName[(at + 1)..];
        lock (_lock)
        {
            if (!_volumes.TryGetValue(volume, out var state) || state.Deleting || state.Volume is null
                || _pools.Find(state.Spec.Pool) is not ISnapshotPool pool || !pool.TryGetSnapshot(state.Spec.Id, snapshot, out var device))
            {
                return null;
            }
            var session = new ExportSession(exportName, new VolumeEngine(exportName, device!), clientDescription, closed =>
            {
                lock (_lock)
                {
                    _snapshotSessions.GetValueOrDefault(exportName)?.Remove(closed);
                }
            });
            if (!_snapshotSessions.TryGetValue(exportName, out var sessions))
            {
                _snapshotSessions[exportName] = sessions = [];
            }
            sessions.Add(session);
            return session;
        }
    }

    private IEnumerable<ExportDescription> SnapshotExports(VolumeState state)
    {
        if (_pools.Find(state.Spec.Pool) is not ISnapshotPool pool)
        {
            return [];
        }
        return pool.ListSnapshots(state.Spec.Id).Select(s => new ExportDescription($"{state.Spec.Name}{SnapshotSeparator}{s.Name}",
            $"Cairn snapshot {s.Name} of volume {state.Spec.Name} (read-only)", s.SizeBytes, IsReadOnly: true));
    }

    private List<ExportSession> TakeSnapshotSessions(string exportName, bool force)
    {
        lock (_lock)
        {
            var sessions = _snapshotSessions.GetValueOrDefault(exportName) ?? [];
            if (sessions.Count > 0 && !force)
            {
                throw new CairnException(CairnErrorCode.Busy,
                    $"snapshot '{exportName}' has {sessions.Count} connected client(s) ({string.Join(", ", sessions.Select(s => s.ClientDescription))}); disconnect them first or delete with force");
            }
            _snapshotSessions.Remove(exportName);
            return [.. sessions];
        }
    }

    private static void ValidateSnapshotName([NotNull] string? name, string field)
    {
        if (!VolumeNames.TryValidate(name, "snapshot name", out string error))
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, error, field);
        }
    }

    private static CairnException SnapshotNotFound(string volume, string snapshot, string field = "snapshot") =>
        new(CairnErrorCode.NotFound, $"volume '{volume}' has no snapshot named '{snapshot}'", field);
}

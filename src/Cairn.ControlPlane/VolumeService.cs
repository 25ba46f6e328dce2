using System.Text.Json;
using Cairn.BlockStore;
using Cairn.ClusterStore;
using Cairn.ControlPlane.Placement;
using Cairn.ControlPlane.Replication;
using Cairn.Core;
using Cairn.Engine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

/// <summary>
/// Volumes on this node. Desired state (the <see cref="VolumeSpec"/>) lives in the cluster store;
/// data lives as a stored volume in a pool. Every change writes the spec first, by compare-and-swap,
/// then touches storage, so a crash in between leaves a difference that <see cref="StartAsync"/> heals.
/// </summary>
public sealed partial class VolumeService : IExportCatalog, IAsyncDisposable
{
    public const string VolumesPrefix = ClusterKeys.Volumes;

    /// <summary>Sizes are whole 512-byte sectors: every block protocol addresses sectors, and the kernel rounds anything else down.</summary>
    public const long SizeGranularityBytes = 512;

    private readonly IClusterStore _store;
    private readonly PoolManager _pools;
    private readonly ExportAddresses _addresses;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _mutations = new(1, 1); // one create/grow/delete at a time: control-plane calls are rare
    private readonly object _lock = new();                  // guards _volumes and each state's sessions
    private readonly Dictionary<string, VolumeState> _volumes = new(StringComparer.Ordinal);

    private readonly VolumeOwnership _ownership;
    private readonly Func<CancellationToken, Task<bool>>? _isDraining;

    /// <param name="isDraining">Whether the admin has drained this node; a drained node takes no new volumes. Null = never drained.</param>
    public VolumeService(IClusterStore store, PoolManager pools, ExportAddresses? addresses = null, ILogger<VolumeService>? logger = null, TimeProvider? time = null,
        VolumeOwnership? ownership = null, Func<CancellationToken, Task<bool>>? isDraining = null)
    {
        _ownership = ownership ?? VolumeOwnership.SingleNode(null);
        _isDraining = isDraining;
        _store = store;
        _pools = pools;
        _addresses = addresses ?? new ExportAddresses();
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
    }

    /// <param name="replicated">For a replicated volume this node owns: the device that writes to every in-sync replica.</param>
    private sealed class VolumeState(VolumeSpec spec, long modRevision, StoredVolume? volume, OwnedReplication? replicated = null)
    {
        public VolumeSpec Spec { get; set; } = spec;
        public long ModRevision { get; set; } = modRevision;
        /// <summary>Null when the spec's pool is not open here.</summary>
        public StoredVolume? Volume { get; } = volume;
        public OwnedReplication? Replicated { get; } = replicated;
        public VolumeEngine? Engine { get; } = volume is null ? null : new VolumeEngine(spec.Name, (IBlockDevice?)replicated?.Device ?? volume);
        public List<ExportSession> Sessions { get; } = [];
        public bool Deleting { get; set; }
    }

    private static string KeyOf(string name) => VolumesPrefix + name;

    /// <param name="pool">The pool to create it in (placement's choice); null picks this node's pool with the most free space.</param>
    /// <param name="placement">The policy placement used, recorded in the spec.</param>
    /// <param name="replicas">Where placement put every copy, this node first; more than one makes a replicated volume.</param>
    public async Task<VolumeInfo> CreateAsync(string? name, long sizeBytes, string? pool = null, PlacementPolicy? placement = null,
        IReadOnlyList<ReplicaPlacement>? replicas = null, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(name);
        ValidateSize(sizeBytes);
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            if (Find(name) is not null)
            {
                throw AlreadyExists(name);
            }
            if (_isDraining is not null && await _isDraining(cancellationToken))
            {
                string node = _ownership.NodeName ?? "this node";
                throw new CairnException(CairnErrorCode.Unavailable,
                    $"node '{node}' is draining and takes no new volumes; create '{name}' through another node, or undrain this one (cairn node undrain {node})");
            }
            var target = pool is null ? _pools.PickForNewVolume() : _pools.Find(pool) ?? throw NoSuchPool(pool);
            var spec = new VolumeSpec(name, Guid.NewGuid().ToString("N"), sizeBytes, target.Name, _time.GetUtcNow(), _ownership.NodeName, placement);
            if (replicas is { Count: > 1 } || _replication is not null)
            {
                // In a cluster every volume has a replica set, even of one, so its replica count can change online.
                spec = spec.WithReplication(ReplicaSetFor(name, target.Name, replicas ?? []));
            }
            var put = Transaction.If(Compare.Missing(KeyOf(name))).Then(TxnOp.Put(KeyOf(name), Serialize(spec)));
            var result = await _store.CommitAsync(put, cancellationToken);
            if (!result.Succeeded)
            {
                throw AlreadyExists(name);
            }
            StoredVolume stored;
            try
            {
                stored = target.CreateVolume(spec.Id, sizeBytes);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                await UndoCreateAsync(spec, result.Revision);
                throw new CairnException(CairnErrorCode.Unavailable, $"pool '{target.Name}' could not create volume '{name}': {e.Message}", inner: e);
            }
            var state = spec.Replication is null
                ? new VolumeState(spec, result.Revision, stored)
                : await OpenReplicatedAsync(spec, stored, cancellationToken);
            lock (_lock)
            {
                _volumes[name] = state;
            }
            _logger.LogInformation("created volume {Volume} ({SizeBytes} bytes) as {Id} in pool {Pool}", name, sizeBytes, spec.Id, target.Name);
            return Describe(state);
        }
        finally
        {
            _mutations.Release();
        }
    }

    private async Task UndoCreateAsync(VolumeSpec spec, long revision)
    {
        try
        {
            await _store.CommitAsync(Transaction.If(Compare.ModRevisionIs(KeyOf(spec.Name), revision)).Then(TxnOp.Delete(KeyOf(spec.Name))));
        }
        catch (Exception e)
        {
            // The next startup reconcile creates the missing stored volume instead.
            _logger.LogError(e, "could not remove the spec of volume {Volume} after its creation failed", spec.Name);
        }
    }

    public IReadOnlyList<VolumeInfo> List()
    {
        lock (_lock)
        {
            return [.. _volumes.Values.OrderBy(v => v.Spec.Name, StringComparer.Ordinal).Select(Describe)];
        }
    }

    /// <summary>Whether this node owns (stores and serves) the volume.</summary>
    public bool Owns(string name) => Find(name) is not null;

    public VolumeInfo Get(string? name)
    {
        VolumeNames.Validate(name);
        return Describe(Find(name) ?? throw NotFound(name));
    }

    public async Task<VolumeInfo> GrowAsync(string? name, long newSizeBytes, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(name);
        ValidateSize(newSizeBytes);
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var state = Find(name) ?? throw NotFound(name);
            long current = state.Spec.SizeBytes;
            if (newSizeBytes < current)
            {
                throw new CairnException(CairnErrorCode.InvalidArgument,
                    $"volume '{name}' is {ByteSize.Format(current)}; {ByteSize.Format(newSizeBytes)} would shrink it, and volumes can only grow", "size");
            }
            if (newSizeBytes == current)
            {
                return Describe(state); // idempotent: a retried grow succeeds
            }
            var volume = state.Volume ?? throw PoolUnavailable(state.Spec);
            if (state.Replicated is not null)
            {
                await RefreshOwnedSpecAsync(state, cancellationToken); // its replica set changes under it; start from the stored revision
            }
            var spec = state.Spec with { SizeBytes = newSizeBytes };
            var result = await _store.CommitAsync(
                Transaction.If(Compare.ModRevisionIs(KeyOf(name), state.ModRevision)).Then(TxnOp.Put(KeyOf(name), Serialize(spec))), cancellationToken);
            if (!result.Succeeded)
            {
                throw ChangedConcurrently(name);
            }
            try
            {
                if (state.Replicated is { } replicated)
                {
                    // Every replica grows before this copy does, so no write beyond the old size reaches a replica too small for it.
                    await replicated.Device.GrowAsync(newSizeBytes, () =>
                    {
                        volume.Grow(newSizeBytes);
                        return ValueTask.CompletedTask;
                    }, cancellationToken);
                }
                else
                {
                    volume.Grow(newSizeBytes);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Put the old spec back so desired and stored state agree again; if that fails, startup reconcile retries the grow.
                var undo = await _store.CommitAsync(Transaction.If(Compare.ModRevisionIs(KeyOf(name), result.Revision)).Then(TxnOp.Put(KeyOf(name), Serialize(state.Spec))), CancellationToken.None);
                state.ModRevision = undo.Succeeded ? undo.Revision : result.Revision;
                throw new CairnException(CairnErrorCode.Unavailable, $"pool '{state.Spec.Pool}' could not grow volume '{name}': {e.Message}", inner: e);
            }
            state.Spec = spec;
            state.ModRevision = result.Revision;
            _logger.LogInformation("grew volume {Volume} from {OldBytes} to {NewBytes} bytes", name, current, newSizeBytes);
            return Describe(state);
        }
        finally
        {
            _mutations.Release();
        }
    }

    /// <summary>Deletes a volume. Refused while clients are attached unless <paramref name="force"/>, which revokes their sessions.</summary>
    public async Task DeleteAsync(string? name, bool force, CancellationToken cancellationToken = default)
    {
        VolumeNames.Validate(name);
        await _mutations.WaitAsync(cancellationToken);
        try
        {
            var state = Find(name) ?? throw NotFound(name);
            var revoked = MarkDeleting(state, force);
            var result = await _store.CommitAsync(
                Transaction.If(Compare.ModRevisionIs(KeyOf(name), state.ModRevision)).Then(TxnOp.Delete(KeyOf(name))), cancellationToken);
            for (int retry = 0; !result.Succeeded && state.Replicated is not null && retry < 5; retry++)
            {
                // The owner, its replicas' drops and admissions, and the controller all write a replicated volume's spec:
                // a changed revision is expected, not a conflicting user request. Read it again and delete that, unless
                // another node owns it now (this one was deposed and its view lags): then refuse, deleting nothing.
                try
                {
                    await RefreshOwnedSpecAsync(state, cancellationToken);
                }
                catch (CairnException)
                {
                    lock (_lock)
                    {
                        state.Deleting = false;
                    }
                    throw;
                }
                result = await _store.CommitAsync(
                    Transaction.If(Compare.ModRevisionIs(KeyOf(name), state.ModRevision)).Then(TxnOp.Delete(KeyOf(name))), cancellationToken);
            }
            if (!result.Succeeded)
            {
                lock (_lock)
                {
                    state.Deleting = false;
                }
                throw ChangedConcurrently(name);
            }
            foreach (var session in revoked)
            {
                session.Revoke();
            }
            lock (_lock)
            {
                _volumes.Remove(name);
            }
            if (state.Replicated is { } replicated)
            {
                await replicated.DisposeAsync(); // the replicas' nodes delete their copies when they see the spec gone
            }
            DeleteStored(state.Spec, "deleted");
            _logger.LogInformation("deleted volume {Volume} ({Id}); revoked {Sessions} client sessions", name, state.Spec.Id, revoked.Count);
        }
        finally
        {
            _mutations.Release();
        }
    }

    /// <summary>Stops new sessions; returns the ones to revoke, or throws Busy when clients are attached and this is not forced.</summary>
    private List<ExportSession> MarkDeleting(VolumeState state, bool force)
    {
        lock (_lock)
        {
            if (state.Sessions.Count > 0 && !force)
            {
                string clients = string.Join(", ", state.Sessions.Select(s => s.ClientDescription));
                throw new CairnException(CairnErrorCode.Busy,
                    $"volume '{state.Spec.Name}' has {state.Sessions.Count} connected client(s) ({clients}); disconnect them first or delete with force");
            }
            state.Deleting = true;
            return [.. state.Sessions];
        }
    }

    private void DeleteStored(VolumeSpec spec, string why)
    {
        var pool = _pools.Find(spec.Pool);
        try
        {
            pool?.DeleteVolume(spec.Id);
        }
        catch (Exception e)
        {
            // The spec is gone, so the next startup reconcile deletes the orphaned data.
            _logger.LogError(e, "volume {Volume} was {Why} but its data {Id} in pool {Pool} could not be deleted yet", spec.Name, why, spec.Id, spec.Pool);
        }
    }

    public IReadOnlyList<PoolInfo> ListPools() => _pools.Describe();

    /// <summary>Makes every completed write on every volume durable; called on shutdown.</summary>
    public async Task FlushAllAsync(CancellationToken cancellationToken = default)
    {
        List<VolumeEngine> engines;
        lock (_lock)
        {
            engines = [.. _volumes.Values.Select(v => v.Engine).OfType<VolumeEngine>()];
        }
        foreach (var engine in engines)
        {
            try
            {
                await engine.FlushAsync(cancellationToken);
            }
            catch (BlockDeviceException e)
            {
                _logger.LogError(e, "flushing volume {Volume} failed", engine.VolumeName);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await FlushAllAsync();
        _mutations.Dispose();
    }

    private VolumeState? Find(string name)
    {
        lock (_lock)
        {
            return _volumes.GetValueOrDefault(name);
        }
    }

    private VolumeInfo Describe(VolumeState state)
    {
        IReadOnlyList<ClientInfo> clients;
        lock (_lock)
        {
            clients = [.. state.Sessions.Select(s => new ClientInfo(s.ClientDescription, s.OpenedAt))];
        }
        var spec = state.Spec;
        return new VolumeInfo(spec.Name, spec.Id, spec.SizeBytes, state.Volume?.AllocatedBytes ?? 0, spec.Pool, spec.CreatedAt,
            _addresses.NbdAddressFor(spec.Name), clients, state.Volume is not null, spec.Node ?? _ownership.NodeName,
            _addresses.IscsiAddressFor(spec.Name), spec.Placement, spec.IscsiAccess, spec.Replication, state.Replicated?.RebuildProgress(),
            state.Replicated?.LastRebuilds());
    }

    private static void ValidateSize(long sizeBytes)
    {
        if (sizeBytes <= 0)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument, $"size must be positive, not {sizeBytes}", "size");
        }
        if (sizeBytes > BlockPool.MaxVolumeBytes)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument,
                $"size {ByteSize.Format(sizeBytes)} is larger than the largest volume a pool can hold, {ByteSize.Format(BlockPool.MaxVolumeBytes)}", "size");
        }
        if (sizeBytes % SizeGranularityBytes != 0)
        {
            throw new CairnException(CairnErrorCode.InvalidArgument,
                $"size {sizeBytes} bytes is not a multiple of {SizeGranularityBytes} bytes (block devices are addressed in 512-byte sectors)", "size");
        }
    }

    private static byte[] Serialize(VolumeSpec spec) => JsonSerializer.SerializeToUtf8Bytes(spec, ControlPlaneJson.Default.VolumeSpec);

    private CairnException NoSuchPool(string pool) =>
        new(CairnErrorCode.NotFound, $"node '{_ownership.NodeName ?? "this node"}' has no pool named '{pool}'; it has {string.Join(", ", _pools.Pools.Select(p => p.Name))}", "pool");

    private static CairnException NotFound(string name) =>
        new(CairnErrorCode.NotFound, $"no volume named '{name}'", "name");

    private static CairnException AlreadyExists(string name) =>
        new(CairnErrorCode.AlreadyExists, $"a volume named '{name}' already exists; pick another name", "name");

    private static CairnException ChangedConcurrently(string name) =>
        new(CairnErrorCode.Busy, $"volume '{name}' was changed by another request at the same time; read it again and retry");

    private static CairnException PoolUnavailable(VolumeSpec spec) =>
        new(CairnErrorCode.Unavailable, $"volume '{spec.Name}' lives in pool '{spec.Pool}', which is not open on this node; start cairnd with that pool");
}

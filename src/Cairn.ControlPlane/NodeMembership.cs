using System.Text.Json;
using Cairn.ClusterStore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

public sealed class MembershipOptions
{
    /// <summary>How long the node's record outlives its last keep-alive: a dead node shows Down after about this.</summary>
    public TimeSpan LeaseTtl { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>How often the lease is kept alive and the record (pool figures, heartbeat time) rewritten. Default: a third of the TTL.</summary>
    public TimeSpan? HeartbeatInterval { get; init; }

    public TimeSpan EffectiveHeartbeatInterval => HeartbeatInterval ?? LeaseTtl / 3;
}

/// <summary>
/// This node's membership: registers <c>/cairn/node-registry/NAME</c> (kept, with the Draining flag preserved), then keeps
/// <c>/cairn/nodes/NAME</c> alive on a lease, rewriting it each heartbeat with fresh pool figures. If the lease is lost
/// (the store was unreachable for longer than the TTL), it grants a new one and registers again: same name, same identity.
/// </summary>
public sealed class NodeMembership : IAsyncDisposable, Cairn.Replication.IOwnerLease
{
    private readonly IClusterStore _store;
    private readonly NodeIdentity _identity;
    private readonly Func<IReadOnlyList<NodePool>> _pools;
    private readonly MembershipOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private int _disposed;
    private DateTimeOffset _startedAt;
    private Task? _loop;
    private long _leaseId;
    private long _leaseProvenUntilTicks; // UTC ticks until which the store cannot have expired our lease

    public NodeMembership(IClusterStore store, NodeIdentity identity, Func<IReadOnlyList<NodePool>> pools,
        string? apiAddress = null, string? nbdAddress = null, MembershipOptions? options = null, ILogger? logger = null, TimeProvider? time = null)
    {
        NodeNames.Validate(identity.Name);
        _store = store;
        _identity = identity;
        _pools = pools;
        ApiAddress = apiAddress;
        NbdAddress = nbdAddress;
        _options = options ?? new MembershipOptions();
        _logger = logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
    }

    public string? ApiAddress { get; }

    public string? NbdAddress { get; }

    /// <summary>Where this node's replica service listens (host:port), published for owners of volumes with a copy here.</summary>
    public string? ReplicaAddress { get; init; }

    /// <summary>
    /// Whether the store cannot yet have expired this node's lease: a keep-alive sent at time t that succeeded keeps the
    /// lease alive until at least t + TTL on the store's clock. A safety margin of a quarter TTL covers clock rate
    /// differences and the controller's reaction time. Owners of replicated volumes stop acknowledging IO once this is false.
    /// </summary>
    public bool IsHeld => LeaseId != 0 && _time.GetUtcNow().UtcTicks < Interlocked.Read(ref _leaseProvenUntilTicks);

    /// <summary>The heartbeat lease's id: a new one after the lease was lost and granted again.</summary>
    public long Term => LeaseId;

    private void LeaseProven(DateTimeOffset sentAt) =>
        Interlocked.Exchange(ref _leaseProvenUntilTicks, (sentAt + _options.LeaseTtl * 0.75).UtcTicks);

    public string Name => _identity.Name;

    /// <summary>The lease's time to live: how long the store keeps this node Up without a keep-alive.</summary>
    public TimeSpan LeaseTtl => _options.LeaseTtl;

    /// <summary>This run's boot (see <see cref="NodeRecord.Boot"/>); known once started.</summary>
    public string Boot => _loop is null ? throw new InvalidOperationException("membership not started") : NodeRecord.BootOf(_startedAt);

    /// <summary>The current heartbeat lease (0 before start or while re-registering).</summary>
    public long LeaseId => Interlocked.Read(ref _leaseId);

    /// <summary>Pool figures of a <see cref="PoolManager"/>, for the node record.</summary>
    public static Func<IReadOnlyList<NodePool>> PoolsOf(PoolManager pools) =>
        () => [.. pools.Pools.Select(p => new NodePool(p.Name, p.CapacityBytes, p.UsedBytes, p.FreeBytes))];

    /// <summary>Registers and goes Up; throws when the store cannot be reached. Then heartbeats in the background until stopped.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_loop is not null)
        {
            throw new InvalidOperationException("membership already started");
        }
        _startedAt = _time.GetUtcNow();
        await RegisterAsync(cancellationToken);
        await GoUpAsync(cancellationToken);
        _logger.LogInformation("node {Node} (zone {Zone}, rack {Rack}) joined the cluster; heartbeat lease {LeaseId}, TTL {Ttl}",
            _identity.Name, _identity.Zone, _identity.Rack, LeaseId, _options.LeaseTtl);
        _loop = Task.Run(() => HeartbeatLoopAsync(_stop.Token), CancellationToken.None);
    }

    /// <summary>Writes the registration, keeping the admin's Draining flag and first-registration time; compare-and-swap, retried on a race.</summary>
    private async Task RegisterAsync(CancellationToken cancellationToken)
    {
        string key = ClusterKeys.Registration(_identity.Name);
        for (int attempt = 0; ; attempt++)
        {
            var current = await _store.GetAsync(key, cancellationToken);
            var previous = current is null ? null : ClusterService.ReadRegistration(current, _logger);
            var now = _time.GetUtcNow();
            var registration = new NodeRegistration(_identity.Name, ApiAddress, NbdAddress, _identity.Zone, _identity.Rack, _pools(),
                previous?.RegisteredAt ?? now, now, previous?.Draining ?? false);
            var compare = current is null ? Compare.Missing(key) : Compare.ModRevisionIs(key, current.ModRevision);
            var bytes = JsonSerializer.SerializeToUtf8Bytes(registration, ClusterJson.Default.NodeRegistration);
            if ((await _store.CommitAsync(Transaction.If(compare).Then(TxnOp.Put(key, bytes)), cancellationToken)).Succeeded)
            {
                return;
            }
            if (attempt >= 10)
            {
                throw new CairnException(CairnErrorCode.Busy, $"node '{_identity.Name}''s registration kept changing under this node; is another cairnd running with --node {_identity.Name}?");
            }
        }
    }

    private async Task GoUpAsync(CancellationToken cancellationToken)
    {
        var sentAt = _time.GetUtcNow();
        var lease = await _store.GrantLeaseAsync(_options.LeaseTtl, cancellationToken);
        try
        {
            await PutRecordAsync(lease.Id, cancellationToken);
        }
        catch
        {
            await TryRevokeAsync(lease.Id);
            throw;
        }
        LeaseProven(sentAt);
        Interlocked.Exchange(ref _leaseId, lease.Id);
    }

    private async Task PutRecordAsync(long leaseId, CancellationToken cancellationToken)
    {
        var record = new NodeRecord(_identity.Name, ApiAddress, NbdAddress, _identity.Zone, _identity.Rack, _pools(), _startedAt, _time.GetUtcNow(), ReplicaAddress);
        await _store.PutAsync(ClusterKeys.Node(_identity.Name), JsonSerializer.SerializeToUtf8Bytes(record, ClusterJson.Default.NodeRecord), leaseId, cancellationToken);
    }

    private async Task HeartbeatLoopAsync(CancellationToken stop)
    {
        var interval = _options.EffectiveHeartbeatInterval;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, _time, stop);
                long leaseId = LeaseId;
                if (leaseId == 0)
                {
                    await GoUpAsync(stop);
                    _logger.LogInformation("node {Node} is Up again on heartbeat lease {LeaseId}", _identity.Name, LeaseId);
                    continue;
                }
                var sentAt = _time.GetUtcNow();
                await _store.KeepAliveAsync(leaseId, stop);
                LeaseProven(sentAt);
                await PutRecordAsync(leaseId, stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (LeaseNotFoundException)
            {
                // The store went without a keep-alive for longer than the TTL: others saw this node Down. Come back with a new lease.
                _logger.LogWarning("node {Node}'s heartbeat lease expired; joining again with a new one", _identity.Name);
                Interlocked.Exchange(ref _leaseId, 0);
            }
            catch (ClusterStoreUnavailableException e)
            {
                _logger.LogWarning("node {Node} heartbeat failed, will retry: {Reason}", _identity.Name, e.Message);
            }
            catch (Exception e)
            {
                _logger.LogError(e, "node {Node} heartbeat failed, will retry", _identity.Name);
            }
        }
    }

    /// <summary>Stops heartbeating without telling the store, as a crash would: the record vanishes when the lease expires. For tests.</summary>
    internal async Task AbandonAsync()
    {
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
    }

    /// <summary>Stops heartbeating and revokes the lease, so the node shows Down at once rather than after the TTL.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await AbandonAsync();
        long leaseId = Interlocked.Exchange(ref _leaseId, 0);
        if (leaseId != 0)
        {
            await TryRevokeAsync(leaseId);
        }
        _stop.Dispose();
    }

    private async Task TryRevokeAsync(long leaseId)
    {
        try
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _store.RevokeLeaseAsync(leaseId, deadline.Token);
        }
        catch (Exception e)
        {
            _logger.LogWarning("could not revoke heartbeat lease {LeaseId} of node {Node}; it expires by itself: {Reason}", leaseId, _identity.Name, e.Message);
        }
    }
}

using System.Text.Json;
using Cairn.ClusterStore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

public sealed class ElectionOptions
{
    /// <summary>How long leadership outlives the leader's last keep-alive: a dead leader is replaced within about this.</summary>
    public TimeSpan LeaseTtl { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>Pause before trying again after the store failed.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(500);
}

/// <summary>
/// Leader election for the controller, etcd-style. Each candidate holds a session lease, kept alive every TTL/3.
/// It campaigns by creating <c>/cairn/controller/leader</c> with that lease, if and only if the key is missing (one
/// compare-and-swap transaction, so at most one wins). Losers read the key, watch it from the read's revision + 1, and
/// campaign again when it is deleted — which happens when the leader resigns or its lease expires.
/// A leader steps down as soon as its key changes, its lease is gone, or it could not renew the lease for a whole TTL
/// (then it cannot know the key is still its own); the <c>lead</c> callback's token is cancelled at that moment.
/// </summary>
public sealed class ControllerElection : IAsyncDisposable
{
    private readonly IClusterStore _store;
    private readonly string _candidate;
    private readonly Func<CancellationToken, Task>? _lead;
    private readonly ElectionOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private int _disposed;
    private Task? _loop;
    private volatile bool _abandoned;
    private volatile bool _isLeader;
    private volatile string? _leader;
    private long _leaseId;
    private long _term;

    /// <param name="lead">Runs while this candidate leads; its token is cancelled when leadership ends.</param>
    public ControllerElection(IClusterStore store, string candidate, Func<CancellationToken, Task>? lead = null,
        ElectionOptions? options = null, ILogger? logger = null, TimeProvider? time = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(candidate);
        _store = store;
        _candidate = candidate;
        _lead = lead;
        _options = options ?? new ElectionOptions();
        _logger = logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
    }

    public string Candidate => _candidate;

    /// <summary>Whether this candidate believes it leads. It stops believing at the latest one TTL after it last renewed its lease.</summary>
    public bool IsLeader => _isLeader;

    /// <summary>The leader this candidate last saw (itself when leading), or null.</summary>
    public string? Leader => _leader;

    /// <summary>
    /// While leading: the mod revision of the leader key this candidate wrote, 0 otherwise. A fencing token: a controller
    /// write made as one transaction with <c>Compare.ModRevisionIs(ClusterKeys.ControllerLeader, Term)</c> fails once
    /// leadership has passed on, even if this candidate has not noticed yet.
    /// </summary>
    public long Term => Interlocked.Read(ref _term);

    /// <summary>This candidate's current session lease, 0 between sessions.</summary>
    public long LeaseId => Interlocked.Read(ref _leaseId);

    /// <summary>Raised with true when this candidate becomes leader and false when it stops leading.</summary>
    public event Action<bool>? LeadershipChanged;

    public void Start()
    {
        if (_loop is not null)
        {
            throw new InvalidOperationException("election already started");
        }
        _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
    }

    private async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await RunSessionAsync(stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _logger.LogWarning("controller election on {Node}: {Reason}; trying again", _candidate, e.Message);
                try
                {
                    await Task.Delay(_options.RetryDelay, _time, stop);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    /// <summary>One lease: campaign, lead or follow, until the lease is lost or leadership ends.</summary>
    private async Task RunSessionAsync(CancellationToken stop)
    {
        var lease = await _store.GrantLeaseAsync(_options.LeaseTtl, stop);
        Interlocked.Exchange(ref _leaseId, lease.Id);
        using var session = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var keepAlive = KeepAliveAsync(lease.Id, session);
        try
        {
            while (!session.IsCancellationRequested)
            {
                var campaign = await _store.CommitAsync(
                    Transaction.If(Compare.Missing(ClusterKeys.ControllerLeader))
                        .Then(TxnOp.Put(ClusterKeys.ControllerLeader, Record(), lease.Id)), session.Token);
                if (campaign.Succeeded)
                {
                    await LeadAsync(campaign.Revision, session);
                    return; // leadership ended: start over with a fresh lease
                }
                var range = await _store.RangeAsync(ClusterKeys.ControllerLeader, session.Token);
                var current = range.Items.FirstOrDefault(kv => kv.Key == ClusterKeys.ControllerLeader);
                if (current is null)
                {
                    continue; // deleted between the campaign and the read
                }
                if (current.LeaseId == lease.Id)
                {
                    // An earlier campaign of ours succeeded but its answer was lost: the key is ours.
                    await LeadAsync(current.ModRevision, session);
                    return;
                }
                _leader = TryReadLeader(current)?.Node;
                _logger.LogDebug("controller election on {Node}: following {Leader}", _candidate, _leader);
                await WaitForChangeAsync(range.Revision + 1, stopAtPut: false, session.Token);
            }
        }
        finally
        {
            await session.CancelAsync();
            await keepAlive;
            Interlocked.Exchange(ref _leaseId, 0);
            if (!_abandoned)
            {
                await TryRevokeAsync(lease.Id); // deletes the leader key if it is still ours: a successor need not wait for expiry
            }
        }
    }

    private async Task LeadAsync(long revision, CancellationTokenSource session)
    {
        _leader = _candidate;
        Interlocked.Exchange(ref _term, revision);
        _isLeader = true;
        _logger.LogInformation("node {Node} is now the controller (leader key revision {Revision})", _candidate, revision);
        LeadershipChanged?.Invoke(true);
        using var leading = CancellationTokenSource.CreateLinkedTokenSource(session.Token);
        var work = _lead is null ? Task.CompletedTask : RunLeadAsync(leading.Token);
        try
        {
            await WaitForChangeAsync(revision + 1, stopAtPut: true, session.Token);
            _logger.LogWarning("node {Node} lost the controller key; stepping down", _candidate);
        }
        catch (OperationCanceledException) when (session.IsCancellationRequested)
        {
            // Lease lost or shutting down.
        }
        finally
        {
            _isLeader = false;
            Interlocked.Exchange(ref _term, 0);
            _leader = null;
            await leading.CancelAsync();
            await work;
            LeadershipChanged?.Invoke(false);
            _logger.LogInformation("node {Node} is no longer the controller", _candidate);
        }
    }

    private async Task RunLeadAsync(CancellationToken leading)
    {
        try
        {
            await _lead!(leading);
        }
        catch (OperationCanceledException) when (leading.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _logger.LogError(e, "the controller on {Node} failed", _candidate);
        }
    }

    /// <summary>Returns when the leader key is deleted (or, with <paramref name="stopAtPut"/>, also overwritten) at or after <paramref name="fromRevision"/>.</summary>
    private async Task WaitForChangeAsync(long fromRevision, bool stopAtPut, CancellationToken cancellationToken)
    {
        await foreach (var change in _store.WatchAsync(ClusterKeys.ControllerLeader, fromRevision, cancellationToken))
        {
            if (change.Kv.Key == ClusterKeys.ControllerLeader && (change.Type == WatchEventType.Delete || stopAtPut))
            {
                return;
            }
        }
    }

    /// <summary>Renews the lease every TTL/3; ends the session when the lease is gone or went a whole TTL without renewal.</summary>
    private async Task KeepAliveAsync(long leaseId, CancellationTokenSource session)
    {
        var ttl = _options.LeaseTtl;
        var lastRenewed = _time.GetUtcNow();
        while (!session.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(ttl / 3, _time, session.Token);
                await _store.KeepAliveAsync(leaseId, session.Token);
                lastRenewed = _time.GetUtcNow();
            }
            catch (OperationCanceledException) when (session.IsCancellationRequested)
            {
                return;
            }
            catch (LeaseNotFoundException)
            {
                _logger.LogWarning("controller election on {Node}: session lease {LeaseId} expired", _candidate, leaseId);
                await session.CancelAsync();
                return;
            }
            catch (Exception e)
            {
                if (_time.GetUtcNow() - lastRenewed >= ttl)
                {
                    _logger.LogWarning("controller election on {Node}: lease not renewed for {Ttl}, giving up the session: {Reason}", _candidate, ttl, e.Message);
                    await session.CancelAsync();
                    return;
                }
            }
        }
    }

    private byte[] Record() => JsonSerializer.SerializeToUtf8Bytes(new LeaderRecord(_candidate, _time.GetUtcNow()), ClusterJson.Default.LeaderRecord);

    private static LeaderRecord? TryReadLeader(KeyValue kv)
    {
        try
        {
            return JsonSerializer.Deserialize(kv.Value, ClusterJson.Default.LeaderRecord);
        }
        catch (JsonException)
        {
            return null;
        }
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
            _logger.LogDebug("controller election on {Node}: could not revoke lease {LeaseId}, it expires by itself: {Reason}", _candidate, leaseId, e.Message);
        }
    }

    /// <summary>Stops campaigning and keeping the lease alive without revoking it, as a crash would. For tests.</summary>
    internal async Task AbandonAsync()
    {
        _abandoned = true;
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
    }

    /// <summary>Resigns (revokes the lease, which deletes the leader key if it is ours) and stops.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
        _stop.Dispose();
    }
}

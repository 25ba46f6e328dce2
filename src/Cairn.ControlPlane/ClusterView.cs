using System.Text.Json;
using Cairn.ClusterStore;
using Cairn.ControlPlane.Placement;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

/// <summary>
/// An in-memory copy of the cluster's state under <c>/cairn/</c> (nodes, registrations, volume specs), loaded with one
/// range and kept current by a watch from that range's revision + 1, so no change between the read and the watch is
/// lost. Placement and the controller read this instead of ranging the store per decision: at 100,000 volumes a range
/// per create would move megabytes. A compacted watch reloads; an unreachable store is retried.
/// </summary>
public sealed class ClusterView : IAsyncDisposable
{
    private const string Root = "/cairn/";

    private readonly IClusterStore _store;
    private readonly string? _localNode;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _lock = new();
    private readonly Dictionary<string, NodeRegistration> _registrations = new(StringComparer.Ordinal);
    private readonly Dictionary<string, NodeRecord> _live = new(StringComparer.Ordinal);
    private readonly Dictionary<string, VolumeSpec> _volumes = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Node, string Pool), long> _provisioned = [];
    private readonly Dictionary<string, VolumeHealth> _health = new(StringComparer.Ordinal);
    private TaskCompletionSource _changed = NewSignal();   // any applied event: wakes revision waiters
    private TaskCompletionSource _reshaped = NewSignal();  // a change of state: wakes reconcile loops
    private long _revision;
    private Task? _watch;

    /// <param name="localNode">The node that owns specs written before clustering (which name no node).</param>
    public ClusterView(IClusterStore store, string? localNode = null, ILogger<ClusterView>? logger = null)
    {
        _store = store;
        _localNode = localNode;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The store revision this view reflects.</summary>
    public long Revision => Interlocked.Read(ref _revision);

    /// <summary>Loads the state and starts following changes. Throws if the store cannot be read.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await LoadAsync(cancellationToken);
        _watch = Task.Run(() => FollowAsync(_stop.Token), CancellationToken.None);
    }

    /// <summary>Waits (up to <paramref name="timeout"/>) until the view reflects <paramref name="revision"/>; false on timeout.</summary>
    public Task<bool> WaitForRevisionAsync(long revision, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        WaitUntilAsync(() => _revision >= revision, timeout, cancellationToken);

    /// <summary>
    /// Waits until the view has applied every change the store made before this call, so a decision made next sees the
    /// caller's own earlier writes (a drain, a create). One cheap read asks the store for its revision. False on timeout
    /// (changes outside <c>/cairn/</c> raise the store's revision without ever reaching the view; the wait then ends at
    /// <paramref name="timeout"/>, and the view is as fresh as it can be).
    /// </summary>
    public async Task<bool> CatchUpAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var probe = await _store.RangeAsync(ClusterKeys.ControllerLeader, cancellationToken);
        return await WaitForRevisionAsync(probe.Revision, timeout, cancellationToken);
    }

    /// <summary>Waits (up to <paramref name="timeout"/>) until <paramref name="condition"/>, evaluated under the view's lock, holds; false on timeout.</summary>
    public async Task<bool> WaitUntilAsync(Func<bool> condition, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        while (true)
        {
            Task changed;
            lock (_lock)
            {
                if (condition())
                {
                    return true;
                }
                changed = _changed.Task;
            }
            try
            {
                await changed.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Completes at the next change of the cluster's state — a node joining, going Down or coming Up, a registration
    /// (Draining) or a volume spec changing — for loops that reconcile on change. A heartbeat rewriting a live node's
    /// record and the controller's own health records do not count: at 1,000 nodes heartbeats alone arrive hundreds
    /// of times a second, and a reconcile pass per heartbeat would keep the controller busy doing nothing.
    /// </summary>
    public Task NextChangeAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return _reshaped.Task.WaitAsync(cancellationToken);
        }
    }

    public IReadOnlyList<VolumeSpec> Volumes()
    {
        lock (_lock)
        {
            return [.. _volumes.Values.OrderBy(v => v.Name, StringComparer.Ordinal)];
        }
    }

    public VolumeSpec? FindVolume(string name)
    {
        lock (_lock)
        {
            return _volumes.GetValueOrDefault(name);
        }
    }

    /// <summary>The controller's last judgement of the volume, or null before it made one.</summary>
    public VolumeHealth? FindHealth(string volume)
    {
        lock (_lock)
        {
            return _health.GetValueOrDefault(volume);
        }
    }

    /// <summary>Every health record the controller wrote.</summary>
    public IReadOnlyList<VolumeHealth> Health()
    {
        lock (_lock)
        {
            return [.. _health.Values];
        }
    }

    /// <summary>The node's live record, or null while it is Down or unknown.</summary>
    public NodeRecord? FindLiveNode(string name)
    {
        lock (_lock)
        {
            return _live.GetValueOrDefault(name);
        }
    }

    /// <summary>The current boot of every live node (<see cref="NodeRecord.Boot"/>), by name: a node that is absent is Down.</summary>
    public IReadOnlyDictionary<string, string> LiveBoots()
    {
        lock (_lock)
        {
            return _live.ToDictionary(n => n.Key, n => n.Value.Boot, StringComparer.Ordinal);
        }
    }

    /// <summary>Every registered node as placement sees it: state, domains, pools with what specs already provision from them.</summary>
    public IReadOnlyList<NodeCandidate> PlacementCandidates()
    {
        lock (_lock)
        {
            var nodes = new List<NodeCandidate>(_registrations.Count);
            foreach (var registration in _registrations.Values)
            {
                var live = _live.GetValueOrDefault(registration.Name);
                var state = live is null ? NodeState.Down : registration.Draining ? NodeState.Draining : NodeState.Up;
                var pools = (live?.Pools ?? registration.Pools)
                    .Select(p => new PoolCandidate(p.Name, p.CapacityBytes, p.FreeBytes, _provisioned.GetValueOrDefault((registration.Name, p.Name))))
                    .ToList();
                nodes.Add(new NodeCandidate(registration.Name, live?.Zone ?? registration.Zone, live?.Rack ?? registration.Rack, state, pools));
            }
            return nodes;
        }
    }

    private async Task LoadAsync(CancellationToken cancellationToken)
    {
        var range = await _store.RangeAsync(Root, cancellationToken);
        lock (_lock)
        {
            _registrations.Clear();
            _live.Clear();
            _volumes.Clear();
            _provisioned.Clear();
            _health.Clear();
            foreach (var kv in range.Items)
            {
                Apply(WatchEventType.Put, kv);
            }
            _revision = range.Revision;
            Signal(reshaped: true);
        }
    }

    private async Task FollowAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await foreach (var change in _store.WatchAsync(Root, Revision + 1, stop))
                {
                    lock (_lock)
                    {
                        bool reshaped = Apply(change.Type, change.Kv);
                        _revision = Math.Max(_revision, change.Revision);
                        Signal(reshaped);
                    }
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RevisionCompactedException e)
            {
                _logger.LogWarning("cluster view fell behind compaction ({Message}); reloading", e.Message);
                await RetryAsync(LoadAsync, stop);
            }
            catch (Exception e)
            {
                _logger.LogWarning("cluster view lost its watch ({Message}); resuming from revision {Revision}", e.Message, Revision + 1);
                await DelayAsync(stop);
            }
        }
    }

    private async Task RetryAsync(Func<CancellationToken, Task> action, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await action(stop);
                return;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _logger.LogWarning("cluster view could not reload ({Message}); retrying", e.Message);
                await DelayAsync(stop);
            }
        }
    }

    private static async Task DelayAsync(CancellationToken stop)
    {
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), stop);
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    /// <summary>Applies one event; true when it changed the cluster's state (see <see cref="NextChangeAsync"/>).</summary>
    private bool Apply(WatchEventType type, KeyValue kv)
    {
        string key = kv.Key;
        if (key.StartsWith(ClusterKeys.Volumes, StringComparison.Ordinal))
        {
            ApplyVolume(key[ClusterKeys.Volumes.Length..], type == WatchEventType.Put ? Read(kv, ControlPlaneJson.Default.VolumeSpec) : null);
            return true;
        }
        if (key.StartsWith(ClusterKeys.Nodes, StringComparison.Ordinal))
        {
            string node = key[ClusterKeys.Nodes.Length..];
            bool wasLive = _live.ContainsKey(node);
            Set(_live, node, type == WatchEventType.Put ? Read(kv, ClusterJson.Default.NodeRecord) : null);
            return wasLive != _live.ContainsKey(node); // a heartbeat rewrites a live record: no change of state
        }
        if (key.StartsWith(ClusterKeys.VolumeHealth, StringComparison.Ordinal))
        {
            Set(_health, key[ClusterKeys.VolumeHealth.Length..], type == WatchEventType.Put ? Read(kv, ClusterJson.Default.VolumeHealth) : null);
            return false; // the controller's own output
        }
        if (key.StartsWith(ClusterKeys.NodeRegistry, StringComparison.Ordinal))
        {
            Set(_registrations, key[ClusterKeys.NodeRegistry.Length..], type == WatchEventType.Put ? Read(kv, ClusterJson.Default.NodeRegistration) : null);
            return true;
        }
        return false;
    }

    private void ApplyVolume(string name, VolumeSpec? spec)
    {
        if (_volumes.Remove(name, out var old))
        {
            Provision(old, -old.SizeBytes);
        }
        if (spec is not null)
        {
            _volumes[name] = spec;
            Provision(spec, spec.SizeBytes);
        }
    }

    /// <summary>Counts a volume's size against every pool holding a copy of it (thin: promised, not yet used).</summary>
    private void Provision(VolumeSpec spec, long bytes)
    {
        foreach (var (copyNode, pool) in spec.Copies())
        {
            if ((copyNode ?? _localNode) is { } node)
            {
                Provision((node, pool), bytes);
            }
        }
    }

    private void Provision((string Node, string Pool) key, long bytes)
    {
        long total = _provisioned.GetValueOrDefault(key) + bytes;
        if (total == 0)
        {
            _provisioned.Remove(key);
        }
        else
        {
            _provisioned[key] = total;
        }
    }

    private static void Set<T>(Dictionary<string, T> map, string name, T? value)
        where T : class
    {
        if (value is null)
        {
            map.Remove(name);
        }
        else
        {
            map[name] = value;
        }
    }

    private T? Read<T>(KeyValue kv, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize(kv.Value, type);
        }
        catch (JsonException e)
        {
            _logger.LogError("cluster view ignores unreadable {Key}: {Message}", kv.Key, e.Message);
            return null;
        }
    }

    private void Signal(bool reshaped)
    {
        var old = _changed;
        _changed = NewSignal();
        old.TrySetResult();
        if (reshaped)
        {
            var oldShape = _reshaped;
            _reshaped = NewSignal();
            oldShape.TrySetResult();
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_watch is not null)
        {
            await _watch;
        }
        _stop.Dispose();
    }
}

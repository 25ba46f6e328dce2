using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>
/// One node: its drive, the replica it serves (a real <see cref="ReplicaTarget"/>), and a model of the daemon around
/// them — heartbeats that keep the node's lease, a watch on the store that makes this node the volume's owner when the
/// store says so, and the owner itself (<see cref="OwnerHost"/>, around a real <see cref="ReplicatedVolume"/>).
/// A crash loses the drive's cache and everything in memory: the replica's epoch, the owner, client connections.
/// The daemon is the simulation's model of code that production does not have yet; see README.md.
/// </summary>
internal sealed class SimNode
{
    private readonly SimCluster _cluster;
    private readonly List<TaskCompletionSource<ClientResult>> _clientRequests = [];
    private SimStoreClient? _store;
    private long _leaseExpiresUs;
    private bool _activating;

    public SimNode(SimCluster cluster, string name)
    {
        _cluster = cluster;
        Name = name;
        Disk = new SimDisk(cluster.Sim, name, cluster.Options.Blocks, cluster.Options.DiskLatencyUsMax);
    }

    public string Name { get; }

    public SimDisk Disk { get; }

    public int Incarnation => Disk.Incarnation;

    public bool IsUp { get; private set; }

    public ReplicaTarget? Target { get; private set; }

    public OwnerHost? Host { get; private set; }

    /// <summary>The node's own view of its lease: renewed from when a heartbeat was sent, so it runs out no later than the store's.</summary>
    public bool HoldsLease => _cluster.Sim.NowUs < _leaseExpiresUs;

    public void Start()
    {
        IsUp = true;
        int incarnation = Incarnation;
        // As in cairnd, the replica is served only once the store holds this boot (its node record is written before
        // the replica service takes any volume), at the epoch the store holds (so a deposed owner is refused): at the
        // first heartbeat that lands. Nodes bootstrapped into the store serve at once.
        Target = _cluster.Store.BootOf(Name) == incarnation ? NewTarget(incarnation, _cluster.Store.Set.Epoch) : null;
        _store = new SimStoreClient(_cluster, this, incarnation);
        _leaseExpiresUs = 0;
        _cluster.Sim.Trace($"{Name}: up (boot {incarnation})");
        _cluster.Spawn(() => HeartbeatLoopAsync(incarnation));
    }

    private ReplicaTarget NewTarget(int incarnation, ulong epoch)
    {
        var target = new ReplicaTarget(Name, Disk.ViewFor(incarnation));
        target.TryAdmit(epoch);
        return target;
    }

    public void Crash()
    {
        if (!IsUp)
        {
            return;
        }
        _cluster.Sim.Trace($"{Name}: crash{(Host is null ? "" : $" (owner at epoch {Host.Volume.Epoch})")}");
        IsUp = false;
        Target = null;
        Host = null;
        _activating = false;
        Disk.Crash(_cluster.Options.CrashLosesWholeCache);
        var requests = _clientRequests.ToList();
        _clientRequests.Clear();
        foreach (var request in requests)
        {
            request.TrySetResult(ClientResult.Fail($"{Name} crashed"));
        }
    }

    /// <summary>A client's request over its connection to this node (clients are not partitioned; a crash resets them).</summary>
    public Task<ClientResult> SubmitAsync(ClientOp op)
    {
        var sim = _cluster.Sim;
        var reply = new TaskCompletionSource<ClientResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        sim.At(_cluster.Network.DelayUs(), () =>
        {
            if (!IsUp)
            {
                reply.TrySetResult(ClientResult.Fail($"{Name} is down"));
                return;
            }
            _clientRequests.Add(reply);
            int incarnation = Incarnation;
            _cluster.Spawn(async () =>
            {
                var result = Host is { } host ? await host.ExecuteAsync(op) : ClientResult.NotOwner($"{Name} does not own the volume");
                sim.At(_cluster.Network.DelayUs(), () =>
                {
                    if (Incarnation == incarnation && _clientRequests.Remove(reply))
                    {
                        reply.TrySetResult(result);
                    }
                });
            });
        });
        return reply.Task;
    }

    /// <summary>Renews the lease every heartbeat period, each renewal on its own so a lost one does not delay the next.</summary>
    private async Task HeartbeatLoopAsync(int incarnation)
    {
        while (Incarnation == incarnation && IsUp)
        {
            _cluster.Spawn(() => HeartbeatAsync(incarnation));
            await _cluster.Sim.Delay(_cluster.Options.HeartbeatUs);
        }
    }

    private async Task HeartbeatAsync(int incarnation)
    {
        long sentUs = _cluster.Sim.NowUs;
        ReplicaSet view;
        try
        {
            view = await _store!.CallAsync("heartbeat", s =>
            {
                s.Heartbeat(Name, incarnation);
                return s.Set;
            });
        }
        catch (TimeoutException)
        {
            return;
        }
        if (Incarnation != incarnation)
        {
            return; // the answer came back in the same instant the node crashed: nobody is left to act on it
        }
        _leaseExpiresUs = Math.Max(_leaseExpiresUs, sentUs + _cluster.Options.LeaseTtlUs);
        Target ??= NewTarget(incarnation, view.Epoch);
        Reconcile(view, incarnation);
    }

    /// <summary>
    /// The daemon's watch: own the volume when the store names this boot of this node, step down otherwise (what
    /// production's VolumeService.SyncWithClusterAsync does: an owner of an earlier boot waits for the controller).
    /// </summary>
    private void Reconcile(ReplicaSet set, int incarnation)
    {
        bool mine = string.Equals(set.Owner, Name, StringComparison.Ordinal) && set.Find(Name)?.Boot == SimClusterStore.Boot(incarnation);
        if (!mine)
        {
            if (Host is not null)
            {
                _cluster.Sim.Trace($"{Name}: steps down (the store names {set.Owner} at epoch {set.Epoch})");
                Host = null;
            }
            return;
        }
        if (Host is { } running && set.LastServed is not null && set.Epoch > running.Volume.Epoch)
        {
            // Failed over away and given back while this owner ran: the replicas refuse its epoch now. Open again.
            _cluster.Sim.Trace($"{Name}: reopens (given back at epoch {set.Epoch})");
            Host = null;
        }
        if ((Host is null || Host.Fenced) && !_activating)
        {
            _activating = true;
            _cluster.Spawn(() => ActivateAsync(set, incarnation));
        }
    }

    /// <summary>
    /// Becomes the owner at <paramref name="set"/>'s epoch, as a real owner must: first raise the epoch on its own
    /// replica and, by hello, on every in-sync remote, so that a deposed owner's requests are refused from then on;
    /// only then serve. A remote that cannot be reached keeps a broken link, so the first write drops it (bumping the
    /// epoch) before anything is acknowledged without it. A replica that has seen a newer epoch means this view is
    /// already stale: give up.
    /// </summary>
    private async Task ActivateAsync(ReplicaSet set, int incarnation)
    {
        try
        {
            if (!Target!.TryAdmit(set.Epoch))
            {
                _cluster.Sim.Trace($"{Name}: not owning at epoch {set.Epoch}: its replica has seen epoch {Target.Epoch}");
                return;
            }
            var remotes = set.InSyncRemotes.Select(m => _cluster.Nodes[m.Node]);
            // All hellos at once, then collected in order (no Task.WhenAll: it would complete on the thread pool).
            var connecting = remotes.Select(r => SimReplicaChannel.ConnectAsync(_cluster, this, r, set.Epoch)).ToList();
            var channels = new List<SimReplicaChannel>();
            foreach (var connect in connecting)
            {
                channels.Add(await connect);
            }
            // Tell the store before serving: until then the controller may still undo this failover (ReplicaSet.LastServed).
            // And ask it which replicas that answered restarted since they joined (within their lease, unseen by the
            // controller): they may lack writes lost from their cache, so they are given up and dropped by the first change.
            var request = new StoreRequest(Name, _cluster.Sim.NowUs);
            if (Incarnation != incarnation)
            {
                return;
            }
            var (served, restarted) = await _store!.CallAsync("activate", s =>
                (s.TryMarkServed(set.Epoch, Name, incarnation, request),
                 set.InSyncRemotes.Where(m => m.Boot is { } joined && s.LiveBootOf(m.Node) is { } now && now != joined).Select(m => m.Node).ToList()));
            if (!served)
            {
                _cluster.Sim.Trace($"{Name}: not owning at epoch {set.Epoch}: the store moved on");
                return;
            }
            foreach (var channel in channels.Where(c => restarted.Contains(c.Replica)))
            {
                channel.Abandon("its node restarted since it joined the in-sync set");
            }
            var volume = new ReplicatedVolume(Disk.ViewFor(incarnation), channels, set.Epoch, new SimInSyncSet(_store!, Name, (_cluster.Options.Bugs & SimBugs.SkipEpochBump) != 0),
                _cluster.Options.OwnerHonoursLease ? new NodeLease(this) : null, remotesMayHoldUnflushedChanges: true); // as cairnd's owners open
            Host = new OwnerHost(_cluster, this, volume);
            _cluster.Sim.Trace($"{Name}: owns the volume at epoch {set.Epoch} with [{string.Join(",", channels.Select(c => c.Replica))}]");
        }
        catch (ReplicaFencedException e)
        {
            _cluster.Sim.Trace($"{Name}: not owning: {e.Message}");
        }
        catch (TimeoutException e)
        {
            _cluster.Sim.Trace($"{Name}: not owning yet: {e.Message}");
        }
        finally
        {
            if (Incarnation == incarnation)
            {
                _activating = false;
            }
        }
    }
}

/// <summary>The production owner-lease check (<see cref="IOwnerLease"/>) fed by the simulated node's view of its lease.</summary>
internal sealed class NodeLease(SimNode node) : IOwnerLease
{
    public bool IsHeld => node.HoldsLease;
}

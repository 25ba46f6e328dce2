using System.Net;
using Cairn.ClusterStore;
using Cairn.ControlPlane;
using Cairn.ControlPlane.Replication;
using Cairn.Core;
using Cairn.Replication;

namespace Cairn.Daemon;

/// <summary>
/// A clustered node's part in replication: the replica service other owners write to, and the loop that keeps this
/// node's copies in line with the replica sets in the cluster store (<see cref="VolumeService.SyncWithClusterAsync"/>)
/// whenever the cluster view changes.
/// </summary>
internal sealed class ReplicationAgent : IAsyncDisposable
{
    private static readonly TimeSpan ResyncInterval = TimeSpan.FromSeconds(5);

    private readonly ReplicaServer _server;
    private readonly VolumeService _volumes;
    private readonly ClusterView _view;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    private ReplicationAgent(ReplicaServer server, VolumeService volumes, ClusterView view, ILogger logger)
    {
        _server = server;
        _volumes = volumes;
        _view = view;
        _logger = logger;
    }

    public IPEndPoint Endpoint => _server.LocalEndpoint;

    /// <summary>Starts the replica service (before the node publishes its address).</summary>
    public static ReplicationAgent Listen(IPEndPoint endpoint, VolumeService volumes, ClusterView view, ILogger logger)
    {
        var server = new ReplicaServer(volumes.ReplicaCatalog,
            new FrontendLog(m => logger.LogInformation("{Message}", m), m => logger.LogWarning("{Message}", m), (e, m) => logger.LogError(e, "{Message}", m)));
        server.Start(endpoint);
        return new ReplicationAgent(server, volumes, view, logger);
    }

    /// <summary>Turns replication on, brings this node's copies in line once, then keeps them so in the background.</summary>
    public async Task StartAsync(NodeMembership membership, IClusterStore store, CancellationToken cancellationToken)
    {
        _volumes.EnableReplication(new ReplicationContext(membership.Name, new ReplicaSetWriter(store), membership,
            name => ReplicationContext.ParseEndpoint(_view.FindLiveNode(name)?.ReplicaAddress), membership.Boot,
            name => _view.FindLiveNode(name)?.Boot, (name, ct) => ClusterService.GetBootAsync(store, name, ct))
        {
            LeaseWait = membership.LeaseTtl,
        });
        await _volumes.SyncWithClusterAsync(_view.Volumes(), cancellationToken);
        _loop = Task.Run(() => LoopAsync(_stop.Token), CancellationToken.None);
    }

    private async Task LoopAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var changed = _view.NextChangeAsync(stop);
            try
            {
                await Task.WhenAny(changed, Task.Delay(ResyncInterval, stop));
                await _volumes.SyncWithClusterAsync(_view.Volumes(), stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _logger.LogWarning(e, "replication: bringing this node's copies in line with the cluster failed; retrying");
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
        await _server.DisposeAsync();
        _stop.Dispose();
    }
}

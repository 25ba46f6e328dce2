using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cairn.ControlPlane;

/// <summary>
/// The cluster controller: runs on the elected node only (see <see cref="ControllerElection"/>). A skeleton for now:
/// it announces itself and waits. Placement, repair and rebalancing will reconcile here (see CLUSTER.md).
/// </summary>
public sealed class Controller(string node, ILogger<Controller>? logger = null)
{
    private readonly ILogger _logger = (ILogger?)logger ?? NullLogger.Instance;

    /// <summary>Runs until <paramref name="leading"/> is cancelled, i.e. until this node stops being the leader.</summary>
    public async Task RunAsync(CancellationToken leading)
    {
        _logger.LogInformation("controller running on node {Node}; nothing to reconcile yet", node);
        try
        {
            await Task.Delay(Timeout.Infinite, leading);
        }
        finally
        {
            _logger.LogInformation("controller on node {Node} stopped", node);
        }
    }
}

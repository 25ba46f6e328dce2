using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>One <see cref="NetnsCluster"/> shared by a test class (starting three cairnd and etcd costs seconds); tests heal what they break.</summary>
public abstract class NetnsClusterFixture : IAsyncLifetime
{
    public NetnsCluster Cluster { get; private set; } = null!;

    protected abstract NetnsClusterOptions Configure(NetnsClusterOptions defaults);

    public async ValueTask InitializeAsync()
    {
        var defaults = new NetnsClusterOptions
        {
            DaemonPath = RepoPaths.Daemon,
            Log = line => TestContext.Current.TestOutputHelper?.WriteLine(line),
        };
        Cluster = await NetnsCluster.StartAsync(Configure(defaults));
    }

    public async ValueTask DisposeAsync()
    {
        if (Cluster is not null)
        {
            await Cluster.DisposeAsync();
        }
        GC.SuppressFinalize(this);
    }
}

/// <summary>The harness tests' cluster: small pools (256 MiB, cheap to fill) and n3's pool on a drive that fails on demand.</summary>
public sealed class HarnessClusterFixture : NetnsClusterFixture
{
    protected override NetnsClusterOptions Configure(NetnsClusterOptions defaults) =>
        defaults with { PoolCapacity = "256MiB", FaultyDriveNode = 3 };
}

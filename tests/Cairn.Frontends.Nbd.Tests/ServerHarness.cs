using System.Net;

namespace Cairn.Frontends.Nbd.Tests;

/// <summary>An in-process NBD server on a free loopback port, over RAM exports: "disk" (default), "ro" (read-only), "big".</summary>
public sealed class ServerHarness : IAsyncDisposable
{
    public const long DiskBytes = 64L << 20;

    private ServerHarness(NbdServer server, TestCatalog catalog, RamBlockDevice disk, RamBlockDevice readOnly)
    {
        Server = server;
        Catalog = catalog;
        Disk = disk;
        ReadOnlyDisk = readOnly;
    }

    public NbdServer Server { get; }
    public TestCatalog Catalog { get; }
    public RamBlockDevice Disk { get; }
    public RamBlockDevice ReadOnlyDisk { get; }
    public int Port => Server.LocalEndpoint.Port;

    public static async Task<ServerHarness> StartAsync(long diskBytes = DiskBytes, Action<NbdServerOptions>? configure = null)
    {
        var disk = new RamBlockDevice(diskBytes);
        var ro = new RamBlockDevice(1 << 20);
        ro.Data.Fill(0xA5);
        var catalog = new TestCatalog { DefaultExportName = "disk" }
            .Add("disk", disk, "the test disk")
            .Add("ro", ro, "a read-only disk", readOnly: true);
        var options = new NbdServerOptions { Endpoint = new IPEndPoint(IPAddress.Loopback, 0) };
        configure?.Invoke(options);
        var server = new NbdServer(catalog, options);
        await server.StartAsync();
        return new ServerHarness(server, catalog, disk, ro);
    }

    public ValueTask DisposeAsync() => Server.DisposeAsync();
}

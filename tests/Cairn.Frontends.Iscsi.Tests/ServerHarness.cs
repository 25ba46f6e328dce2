using System.Net;
using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>An in-process iSCSI target on a free loopback port, over RAM exports: "disk" (64 MiB) and "ro" (read-only, 1 MiB of 0xA5).</summary>
public sealed class ServerHarness : IAsyncDisposable
{
    public const long DiskBytes = 64L << 20;
    public const string Prefix = "iqn.2026-11.io.cairn:";

    private ServerHarness(IscsiServer server, TestCatalog catalog, RamBlockDevice disk, RamBlockDevice readOnly)
    {
        Server = server;
        Catalog = catalog;
        Disk = disk;
        ReadOnlyDisk = readOnly;
    }

    public IscsiServer Server { get; }
    public TestCatalog Catalog { get; }
    public RamBlockDevice Disk { get; }
    public RamBlockDevice ReadOnlyDisk { get; }
    public int Port => Server.LocalEndpoint.Port;

    /// <summary>The libiscsi URL of an export's LUN 0.</summary>
    public string Url(string export = "disk") => $"iscsi://127.0.0.1:{Port}/{Prefix}{export}/0";

    /// <param name="diskAccess">Who may log in to "disk" (anyone, without authentication, when null).</param>
    /// <param name="advertisedHost">What SendTargets answers as the portal host (null: the address dialled).</param>
    /// <param name="withSnapshotExport">Also export "disk@snap", as a volume's snapshot is exported over NBD.</param>
    public static async Task<ServerHarness> StartAsync(long diskBytes = DiskBytes, IscsiAccess? diskAccess = null, string? advertisedHost = null,
        bool withSnapshotExport = false)
    {
        var disk = new RamBlockDevice(diskBytes);
        var ro = new RamBlockDevice(1 << 20, readOnly: true);
        ro.Data.Fill(0xA5);
        var catalog = new TestCatalog()
            .Add("disk", disk, "the test disk", iscsiAccess: diskAccess)
            .Add("ro", ro, "a read-only disk", readOnly: true);
        if (withSnapshotExport)
        {
            catalog.Add("disk@snap", new RamBlockDevice(1 << 20, readOnly: true), "a snapshot of the test disk", readOnly: true);
        }
        var server = new IscsiServer(catalog, new IscsiServerOptions { Endpoint = new IPEndPoint(IPAddress.Loopback, 0), AdvertisedHost = advertisedHost });
        await server.StartAsync();
        return new ServerHarness(server, catalog, disk, ro);
    }

    public ValueTask DisposeAsync() => Server.DisposeAsync();
}

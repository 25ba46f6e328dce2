using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>
/// Bit rot in a replicated volume, across a real etcd and two real cairnd processes: a byte flipped in the owner's data
/// file is rewritten from the replica by `cairn volume scrub` (asked through the other node, exit 0, reported as
/// repaired), one flipped in the replica's data file is rewritten from the owner's copy, a client that reads a rotten
/// block over NBD gets the right data, and afterwards every block reads back and a scrub finds nothing. Then a
/// snapshot's blocks rot on the owner (one only the snapshot holds, one it shares with the volume): `cairn volume
/// scrub` mends both from the replica's copy of the snapshot, and the snapshot's export reads back whole.
/// </summary>
public sealed class ScrubRepairProcessTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Block = 4096;
    private const int Blocks = 64;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60); // generous: a loaded 2-core machine
    private static readonly string[] Names = ["n1", "n2"];

    private EtcdServer _etcd = null!;
    private readonly Dictionary<string, CairnDaemon> _nodes = new(StringComparer.Ordinal);
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(60) };

    public async ValueTask InitializeAsync()
    {
        _etcd = await EtcdServer.StartAsync();
        foreach (string name in Names)
        {
            _nodes[name] = await CairnDaemon.StartAsync(null, "--cluster", _etcd.Spec, "--node", name, "--zone", "z-" + name);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes.Values)
        {
            await node.DisposeAsync();
        }
        await _etcd.DisposeAsync();
        _http.Dispose();
    }

    private static byte[] Content(int block)
    {
        byte[] data = new byte[Block];
        new Random(7000 + block).NextBytes(data);
        return data;
    }

    private string PoolDirectory(string node) => Path.Combine(_nodes[node].DataDirectory, "pools", "default");

    /// <summary>Starts a scrub through <paramref name="via"/>'s API and waits for its result.</summary>
    private async Task<JsonElement> ScrubAsync(string via)
    {
        string url = $"{_nodes[via].ApiUrl}/api/v1/volumes/db/scrub";
        Assert.Equal(HttpStatusCode.Accepted, (await _http.PostAsync(url, null)).StatusCode);
        JsonElement status = default;
        await Eventually.HoldsOverHttpAsync(async () =>
        {
            status = await _http.GetFromJsonAsync<JsonElement>(url);
            return status.GetProperty("state").GetString() != "Running";
        }, Deadline, "the scrub finishes");
        Assert.Equal("Finished", status.GetProperty("state").GetString());
        return status;
    }

    [Fact]
    public async Task Bit_rot_on_either_copy_is_repaired_by_scrub_and_a_client_read_never_sees_it()
    {
        var created = await _http.PostAsJsonAsync(_nodes["n1"].ApiUrl + "/api/v1/volumes", new { name = "db", size = "16MiB", replicas = 2 });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        string owner = (await DaemonJsonAsync(created)).GetProperty("node").GetString()!;
        string replica = Names.Single(n => n != owner);
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "db"))
        {
            for (int block = 0; block < Blocks; block++)
            {
                client.Write((long)block * Block, Content(block));
            }
            client.Flush();
        }

        // The owner's copy rots; the CLI, pointed at the other node, scrubs and repairs it from the replica.
        Assert.Equal(1, DataFileCorruption.CorruptBlock(PoolDirectory(owner), Content(5)));
        var cli = await _nodes[replica].CliAsync("volume", "scrub", "db");
        output.WriteLine(cli.Stdout);
        Assert.True(cli.ExitCode == 0, $"exit {cli.ExitCode}: {cli.Stderr}");
        Assert.Contains("1 bad: 1 repaired from good copies, 0 unrecoverable.", cli.Stdout, StringComparison.Ordinal);
        var status = await _http.GetFromJsonAsync<JsonElement>($"{_nodes[owner].ApiUrl}/api/v1/volumes/db/scrub");
        var error = Assert.Single(status.GetProperty("errors").EnumerateArray());
        Assert.Equal((owner, 5L * Block, $"repaired: rewritten from the copy on {replica}"),
            (error.GetProperty("node").GetString(), error.GetProperty("offsetBytes").GetInt64(), error.GetProperty("repair").GetString()));
        await _nodes[owner].WaitForLogAsync("bad block at byte 20480");

        // The replica's copy rots; the owner finds it with a verify on the replica's node and rewrites it from its own.
        Assert.Equal(1, DataFileCorruption.CorruptBlock(PoolDirectory(replica), Content(9)));
        status = await ScrubAsync(via: owner);
        Assert.Equal((1, 1, 0), (status.GetProperty("errorCount").GetInt32(), status.GetProperty("repairedCount").GetInt32(), status.GetProperty("unrecoverableCount").GetInt32()));
        error = Assert.Single(status.GetProperty("errors").EnumerateArray());
        Assert.Equal((replica, 9L * Block, "repaired: rewritten from the owner's copy"),
            (error.GetProperty("node").GetString(), error.GetProperty("offsetBytes").GetInt64(), error.GetProperty("repair").GetString()));

        // The owner's copy rots again, and a client reads it before any scrub: it gets the replica's good copy.
        Assert.Equal(1, DataFileCorruption.CorruptBlock(PoolDirectory(owner), Content(13)));
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "db"))
        {
            byte[] read = new byte[Blocks * Block];
            client.Read(0, read);
            for (int block = 0; block < Blocks; block++)
            {
                Assert.True(read.AsSpan(block * Block, Block).SequenceEqual(Content(block)), $"block {block} reads back wrong");
            }
        }
        await _nodes[owner].WaitForLogAsync("a read met a bad block at byte 53248");

        status = await ScrubAsync(via: replica);
        Assert.Equal(0, status.GetProperty("errorCount").GetInt32());
        Assert.Equal(2L * Blocks, status.GetProperty("blocksChecked").GetInt64()); // the owner's blocks, then the replica's on its node

        await SnapshotBlocksRotAndAreMendedAsync(owner, replica);
    }

    /// <summary>
    /// Block 20 is overwritten after snapshot "before", so its old content is the snapshot's alone; block 21 the snapshot
    /// shares with the volume. Both rot on the owner; the CLI's scrub mends them in place from the replica's snapshot.
    /// </summary>
    private async Task SnapshotBlocksRotAndAreMendedAsync(string owner, string replica)
    {
        (await _nodes[owner].CliAsync("snapshot", "create", "db", "before")).EnsureSuccess();
        using (var client = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "db"))
        {
            client.Write(20L * Block, Content(100));
            client.Flush();
        }
        Assert.Equal(1, DataFileCorruption.CorruptBlock(PoolDirectory(owner), Content(20)));
        Assert.Equal(1, DataFileCorruption.CorruptBlock(PoolDirectory(owner), Content(21)));

        var cli = await _nodes[replica].CliAsync("volume", "scrub", "db");
        output.WriteLine(cli.Stdout);
        Assert.True(cli.ExitCode == 0, $"exit {cli.ExitCode}: {cli.Stdout} {cli.Stderr}");
        Assert.Contains("2 bad: 2 repaired from good copies, 0 unrecoverable.", cli.Stdout, StringComparison.Ordinal);
        var status = await _http.GetFromJsonAsync<JsonElement>($"{_nodes[owner].ApiUrl}/api/v1/volumes/db/scrub");
        var errors = status.GetProperty("errors").EnumerateArray()
            .Select(e => (e.GetProperty("device").GetString()!.EndsWith("@before", StringComparison.Ordinal), e.GetProperty("offsetBytes").GetInt64(),
                e.GetProperty("node").GetString(), e.GetProperty("repair").GetString()));
        Assert.Equal([(true, 20L * Block, owner, $"repaired: rewritten from the copy on {replica}"), (true, 21L * Block, owner, $"repaired: rewritten from the copy on {replica}")],
            errors);
        await _nodes[owner].WaitForLogAsync("bad block at byte 81920 of snapshot before");

        using (var snapshot = await MiniNbdClient.ConnectAsync(_nodes[owner].NbdPort, "db@before"))
        {
            byte[] read = new byte[Blocks * Block];
            snapshot.Read(0, read);
            for (int block = 0; block < Blocks; block++)
            {
                Assert.True(read.AsSpan(block * Block, Block).SequenceEqual(Content(block)), $"block {block} of the snapshot reads back wrong");
            }
        }
        Assert.Equal(0, (await ScrubAsync(via: owner)).GetProperty("errorCount").GetInt32());

        // Now the replica's copy of the snapshot-only block rots: verified on the replica's node, mended from the owner's snapshot.
        Assert.Equal(1, DataFileCorruption.CorruptBlock(PoolDirectory(replica), Content(20)));
        status = await ScrubAsync(via: replica);
        Assert.Equal((1, 1, 0), (status.GetProperty("errorCount").GetInt32(), status.GetProperty("repairedCount").GetInt32(), status.GetProperty("unrecoverableCount").GetInt32()));
        var mended = Assert.Single(status.GetProperty("errors").EnumerateArray());
        Assert.Equal((true, 20L * Block, replica, "repaired: rewritten from the owner's copy"), (mended.GetProperty("device").GetString()!.EndsWith("@before", StringComparison.Ordinal),
            mended.GetProperty("offsetBytes").GetInt64(), mended.GetProperty("node").GetString(), mended.GetProperty("repair").GetString()));
        Assert.Equal(0, (await ScrubAsync(via: owner)).GetProperty("errorCount").GetInt32());
    }

    private static async Task<JsonElement> DaemonJsonAsync(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
}

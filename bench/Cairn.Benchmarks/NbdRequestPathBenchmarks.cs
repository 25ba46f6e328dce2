using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;
using Cairn.BlockStore;
using Cairn.Core;
using Cairn.Frontends.Nbd;

namespace Cairn.Benchmarks;

/// <summary>
/// The whole request path of the NBD server over loopback: parse, block store, reply. The client below allocates
/// nothing per request, so the allocations BenchmarkDotNet reports per operation are the server's.
/// Each operation is one request inside a pipelined batch of <see cref="QueueDepth"/>.
/// </summary>
[MemoryDiagnoser]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "BenchmarkDotNet disposes through [GlobalCleanup].")]
public class NbdRequestPathBenchmarks
{
    private const int QueueDepth = 32;
    private const int BlockBytes = 4096;
    private const long VolumeBytes = 256L << 20;
    private string _directory = "";
    private BlockPool _pool = null!;
    private NbdServer _server = null!;
    private Socket _socket = null!;
    private byte[] _writeBatch = null!;
    private byte[] _readBatch = null!;
    private byte[] _replies = null!;

    [GlobalSetup]
    public void Setup()
    {
        _directory = Path.Combine("/var/tmp", "cairn-bench-" + Guid.NewGuid().ToString("N"));
        _pool = BlockPool.Create(_directory, "bench", 4L << 30);
        var volume = _pool.CreateVolume("v", VolumeBytes);
        _server = new NbdServer(new SingleExport(volume), new NbdServerOptions { Endpoint = new IPEndPoint(IPAddress.Loopback, 0) });
        _server.StartAsync().GetAwaiter().GetResult();
        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        _socket.Connect(_server.LocalEndpoint);
        Handshake();
        _writeBatch = BuildBatch(command: 1, withPayload: true);
        _readBatch = BuildBatch(command: 0, withPayload: false);
        _replies = new byte[QueueDepth * (16 + BlockBytes)];
        RoundTrip(_writeBatch, replyBytes: QueueDepth * 16); // fill the blocks the reads will hit
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _socket.Dispose();
        _server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _pool.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    [Benchmark(OperationsPerInvoke = QueueDepth)]
    public void Write4K() => RoundTrip(_writeBatch, QueueDepth * 16);

    [Benchmark(OperationsPerInvoke = QueueDepth)]
    public void Read4K() => RoundTrip(_readBatch, QueueDepth * (16 + BlockBytes));

    private void RoundTrip(byte[] batch, int replyBytes)
    {
        _socket.Send(batch);
        int got = 0;
        while (got < replyBytes)
        {
            int n = _socket.Receive(_replies, got, replyBytes - got, SocketFlags.None);
            if (n == 0)
            {
                throw new IOException("server closed the connection");
            }
            got += n;
        }
        if (BinaryPrimitives.ReadUInt32BigEndian(_replies.AsSpan(4)) != 0)
        {
            throw new IOException("server returned an error");
        }
    }

    private static byte[] BuildBatch(ushort command, bool withPayload)
    {
        int each = 28 + (withPayload ? BlockBytes : 0);
        var batch = new byte[QueueDepth * each];
        var random = new Random(5);
        for (int i = 0; i < QueueDepth; i++)
        {
            var r = batch.AsSpan(i * each);
            BinaryPrimitives.WriteUInt32BigEndian(r, 0x25609513);
            BinaryPrimitives.WriteUInt16BigEndian(r[6..], command);
            BinaryPrimitives.WriteUInt64BigEndian(r[8..], (ulong)i);
            BinaryPrimitives.WriteUInt64BigEndian(r[16..], (ulong)(i * 977L % (VolumeBytes / BlockBytes) * BlockBytes));
            BinaryPrimitives.WriteUInt32BigEndian(r[24..], BlockBytes);
            if (withPayload)
            {
                random.NextBytes(r.Slice(28, BlockBytes));
            }
        }
        return batch;
    }

    private void Handshake()
    {
        var greeting = new byte[18];
        ReceiveExactly(greeting);
        var go = new byte[4 + 16 + 4 + 1 + 2];
        BinaryPrimitives.WriteUInt32BigEndian(go, 3); // FIXED_NEWSTYLE | NO_ZEROES
        "IHAVEOPT"u8.CopyTo(go.AsSpan(4));
        BinaryPrimitives.WriteUInt32BigEndian(go.AsSpan(12), 7); // OPT_GO
        BinaryPrimitives.WriteUInt32BigEndian(go.AsSpan(16), 4 + 1 + 2);
        BinaryPrimitives.WriteUInt32BigEndian(go.AsSpan(20), 1);
        go[24] = (byte)'v';
        _socket.Send(go);
        var head = new byte[20];
        while (true)
        {
            ReceiveExactly(head);
            var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(16))];
            ReceiveExactly(payload);
            if (BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(12)) == 1)
            {
                return; // NBD_REP_ACK
            }
        }
    }

    private void ReceiveExactly(byte[] buffer)
    {
        for (int got = 0; got < buffer.Length;)
        {
            got += _socket.Receive(buffer, got, buffer.Length - got, SocketFlags.None);
        }
    }

    private sealed class SingleExport(IBlockDevice device) : IExportCatalog
    {
        public string? DefaultExportName => "v";

        public IReadOnlyList<ExportDescription> ListExports() => [new("v", "benchmark volume", device.SizeBytes, false)];

        public ExportSession? TryOpen(string exportName, string clientDescription) =>
            exportName is "v" or "" ? new ExportSession("v", device, clientDescription) : null;
    }
}

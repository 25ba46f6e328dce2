using System.Net;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using Cairn.BlockStore;
using Cairn.Core;
using Cairn.Replication;

namespace Cairn.Benchmarks;

/// <summary>
/// The replicated write path over loopback, in one process: <c>Link</c> is one <see cref="ReplicaLink"/> to a
/// <see cref="ReplicaServer"/> over a block-store volume; <c>Replicated</c> is the owner's <see cref="ReplicatedVolume"/>
/// over a local volume and two such replicas (three copies). Each operation is one 4 KiB write in a batch of
/// <see cref="QueueDepth"/> started at once; the batch is awaited through one reusable callback, so the bytes
/// BenchmarkDotNet reports per operation are the owner's, the links' and the servers' (the counter is process-wide).
/// </summary>
[MemoryDiagnoser]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2012", Justification = "Each ValueTask is kept to be consumed once, after the batch completed.")]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "BenchmarkDotNet disposes through [GlobalCleanup].")]
public class ReplicaPathBenchmarks
{
    private const int QueueDepth = 32;
    private const int BlockBytes = 4096;
    private const long VolumeBytes = 256L << 20;
    private readonly List<BlockPool> _pools = [];
    private readonly List<ReplicaServer> _servers = [];
    private readonly List<ReplicaLink> _links = [];
    private readonly ValueTask<ReplicaStatus>[] _sends = new ValueTask<ReplicaStatus>[QueueDepth];
    private readonly ValueTask[] _writes = new ValueTask[QueueDepth];
    private readonly byte[] _block = new byte[BlockBytes];
    private readonly ManualResetEventSlim _batchDone = new();
    private Action _onOneDone = null!;
    private int _pending;
    private string _directory = "";
    private ReplicaLink _link = null!;
    private ReplicatedVolume _replicated = null!;

    [GlobalSetup]
    public void Setup()
    {
        _directory = Path.Combine("/var/tmp", "cairn-bench-replica-" + Guid.NewGuid().ToString("N"));
        Random.Shared.NextBytes(_block);
        _onOneDone = OneDone;
        var remotes = new List<IReplicaChannel>();
        for (int i = 0; i < 2; i++)
        {
            var catalog = new ReplicaCatalog();
            catalog.Add(new ReplicaTarget("v", Volume($"r{i}")));
            var server = new ReplicaServer(catalog, new FrontendLog(_ => { }, _ => { }, (_, _) => { }));
            server.Start(new IPEndPoint(IPAddress.Loopback, 0));
            _servers.Add(server);
            var link = ReplicaLink.ConnectAsync(server.LocalEndpoint, "v", 1).GetAwaiter().GetResult();
            _links.Add(link);
            remotes.Add(link);
        }
        _link = ReplicaLink.ConnectAsync(_servers[0].LocalEndpoint, "v", 1).GetAwaiter().GetResult();
        _links.Add(_link);
        _replicated = new ReplicatedVolume(Volume("local"), remotes, 1, new NeverDrops());
        Replicated4K(); // every block the batches hit exists on every copy
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _replicated.Dispose();
        foreach (var link in _links)
        {
            link.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        foreach (var server in _servers)
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        foreach (var pool in _pools)
        {
            pool.Dispose();
        }
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>One replica: link, replica protocol, server, block store, reply.</summary>
    [Benchmark(OperationsPerInvoke = QueueDepth)]
    public void Link4K()
    {
        _pending = QueueDepth;
        _batchDone.Reset();
        for (int i = 0; i < QueueDepth; i++)
        {
            _sends[i] = _link.SendAsync(ReplicaOp.Write, ReplicaFlags.None, Offset(i), BlockBytes, _block, default);
            WhenDone(_sends[i].ConfigureAwait(false).GetAwaiter());
        }
        _batchDone.Wait();
        for (int i = 0; i < QueueDepth; i++)
        {
            if (_sends[i].GetAwaiter().GetResult() != ReplicaStatus.Ok)
            {
                throw new IOException("the replica refused a write");
            }
        }
    }

    /// <summary>Three copies: the owner's write path, local block store and two replicas at once.</summary>
    [Benchmark(OperationsPerInvoke = QueueDepth)]
    public void Replicated4K()
    {
        _pending = QueueDepth;
        _batchDone.Reset();
        for (int i = 0; i < QueueDepth; i++)
        {
            _writes[i] = _replicated.WriteAsync(Offset(i), _block);
            WhenDone(_writes[i].ConfigureAwait(false).GetAwaiter());
        }
        _batchDone.Wait();
        for (int i = 0; i < QueueDepth; i++)
        {
            _writes[i].GetAwaiter().GetResult();
        }
    }

    private static long Offset(int i) => i * 977L % (VolumeBytes / BlockBytes) * BlockBytes;

    private void WhenDone(ConfiguredValueTaskAwaitable<ReplicaStatus>.ConfiguredValueTaskAwaiter awaiter)
    {
        if (awaiter.IsCompleted)
        {
            OneDone();
        }
        else
        {
            awaiter.UnsafeOnCompleted(_onOneDone);
        }
    }

    private void WhenDone(ConfiguredValueTaskAwaitable.ConfiguredValueTaskAwaiter awaiter)
    {
        if (awaiter.IsCompleted)
        {
            OneDone();
        }
        else
        {
            awaiter.UnsafeOnCompleted(_onOneDone);
        }
    }

    private void OneDone()
    {
        if (Interlocked.Decrement(ref _pending) == 0)
        {
            _batchDone.Set();
        }
    }

    private StoredVolume Volume(string name)
    {
        var pool = BlockPool.Create(Path.Combine(_directory, name), name, 1L << 30);
        _pools.Add(pool);
        return pool.CreateVolume("v", VolumeBytes);
    }

    /// <summary>Every replica answers in the benchmark; a drop would be a failure of the setup.</summary>
    private sealed class NeverDrops : IInSyncSet
    {
        public ValueTask<ulong> DropAsync(IReadOnlyList<string> replicas, ulong epoch, ulong missingSince, CancellationToken cancellationToken = default) =>
            throw new InvalidOperationException($"replicas {string.Join(", ", replicas)} failed during the benchmark");

        public ValueTask<ulong> AdmitAsync(string replica, ulong epoch, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();
    }
}

using BenchmarkDotNet.Attributes;
using Cairn.BlockStore;

namespace Cairn.Benchmarks;

/// <summary>4 KiB reads and writes straight into the block store: the cost of checksums, the map and the journal per IO.</summary>
[MemoryDiagnoser]
public class StoreIoBenchmarks
{
    private const int BlockBytes = 4096;
    private const long VolumeBytes = 256L << 20;
    private string _directory = "";
    private BlockPool _pool = null!;
    private StoredVolume _volume = null!;
    private readonly byte[] _buffer = new byte[BlockBytes];
    private readonly byte[] _large = new byte[1 << 20];
    private long _nextLarge;
    private long _next;

    [GlobalSetup]
    public void Setup()
    {
        _directory = Path.Combine("/var/tmp", "cairn-bench-" + Guid.NewGuid().ToString("N"));
        _pool = BlockPool.Create(_directory, "bench", 4L << 30);
        _volume = _pool.CreateVolume("v", VolumeBytes);
        new Random(1).NextBytes(_buffer);
        for (long offset = 0; offset < VolumeBytes; offset += BlockBytes)
        {
            _volume.WriteAsync(offset, _buffer).AsTask().GetAwaiter().GetResult();
        }
        _volume.FlushAsync().AsTask().GetAwaiter().GetResult();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    private long NextOffset()
    {
        // A cheap deterministic scatter over the volume, so no Random call is measured.
        _next = (_next + 7919) % (VolumeBytes / BlockBytes);
        return _next * BlockBytes;
    }

    [Benchmark]
    public ValueTask Write4K() => _volume.WriteAsync(NextOffset(), _buffer);

    [Benchmark]
    public ValueTask Read4K() => _volume.ReadAsync(NextOffset(), _buffer);

    private long NextLargeOffset()
    {
        _nextLarge = (_nextLarge + _large.Length) % VolumeBytes;
        return _nextLarge;
    }

    [Benchmark]
    public ValueTask Write1M() => _volume.WriteAsync(NextLargeOffset(), _large);

    [Benchmark]
    public ValueTask Read1M() => _volume.ReadAsync(NextLargeOffset(), _large);
}

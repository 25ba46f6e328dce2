using System.Collections.Concurrent;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// The writes a client saw acknowledged (offset, one block each, every block written at most once per run), and the
/// check that matters after any fault: each of them reads back, from whichever node serves the volume now, as the
/// crc32c-verified block fio (or <see cref="FioBlock.Fill"/>) wrote for exactly that offset.
/// </summary>
internal sealed class AcknowledgedWrites(int blockBytes)
{
    private readonly ConcurrentDictionary<long, byte> _offsets = new();

    public int BlockBytes => blockBytes;

    public int Count => _offsets.Count;

    public void Add(long offset) => _offsets.TryAdd(offset, 0);

    /// <summary>Reads the whole volume (1 MiB at a time) and returns what is wrong (empty = every acknowledged block is intact).</summary>
    public async Task<List<string>> VerifyAsync(VolumeLocation location, long volumeBytes)
    {
        using var client = await MiniNbdClient.ConnectAsync(location.Host, location.Port, location.Export, TimeSpan.FromSeconds(60));
        var volume = new byte[volumeBytes];
        const int Chunk = 1 << 20;
        for (long at = 0; at < volumeBytes; at += Chunk)
        {
            client.Read(at, volume.AsSpan((int)at, (int)Math.Min(Chunk, volumeBytes - at)));
        }
        var problems = new List<string>();
        foreach (long offset in _offsets.Keys.Order())
        {
            if (!FioBlock.IsValidFor(volume.AsSpan((int)offset, blockBytes), offset))
            {
                bool zeros = volume.AsSpan((int)offset, blockBytes).IndexOfAnyExcept((byte)0) < 0;
                problems.Add($"acknowledged block at {offset} ({blockBytes} bytes) {(zeros ? "reads zeros" : "does not hold its crc32c-verified data")} on {location.Node}");
            }
        }
        return problems;
    }
}

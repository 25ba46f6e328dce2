using System.Diagnostics;
using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// Writes every block of the volume once, in a seeded random order, over several NBD connections, in fio's crc32c
/// verify format, and records each acknowledgement the moment it arrives. Paced like fio (<see cref="FaultPlan.WritesPerSecond"/>)
/// so that writes are still going on when the owner is hit. Unlike fio it stops cleanly when its server dies or stops
/// answering (each request has a deadline, and <see cref="Stop"/> ends it at once), which the owner faults need.
/// </summary>
internal sealed class LedgerWriter(FaultPlan plan, VolumeLocation location)
{
    private static readonly TimeSpan RequestDeadline = TimeSpan.FromSeconds(20);
    private volatile bool _stopped;
    private readonly List<MiniNbdClient> _clients = [];
    private int _next = -1;

    public AcknowledgedWrites Acknowledged { get; } = new(plan.BlockBytes);

    /// <summary>The first error each connection met (a dead or silent owner), for the log.</summary>
    public List<string> Errors { get; } = [];

    public int TotalBlocks => (int)(plan.VolumeBytes / plan.BlockBytes);

    public async Task RunAsync()
    {
        var order = Enumerable.Range(0, TotalBlocks).ToArray();
        new Random(plan.Seed).Shuffle(order);
        int connections = Math.Min(plan.IoDepth, 4);
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, connections).Select(c => Task.Run(() => WriteAsync(order, plan.Seed * 31 + c, clock))));
    }

    /// <summary>
    /// Ends the writes now: closes every connection, so a request waiting on a silent owner fails at once. A write
    /// whose reply had not arrived is not counted as acknowledged, as for any client that gives up.
    /// </summary>
    public void Stop()
    {
        _stopped = true;
        lock (_clients)
        {
            foreach (var client in _clients)
            {
                client.Dispose();
            }
        }
    }

    private async Task WriteAsync(int[] order, int seed, Stopwatch clock)
    {
        var random = new Random(seed);
        var block = new byte[plan.BlockBytes];
        try
        {
            using var client = await MiniNbdClient.ConnectAsync(location.Host, location.Port, location.Export, RequestDeadline);
            lock (_clients)
            {
                _clients.Add(client);
            }
            for (int i = Interlocked.Increment(ref _next); i < order.Length && !_stopped; i = Interlocked.Increment(ref _next))
            {
                var early = TimeSpan.FromSeconds((double)i / plan.WritesPerSecond) - clock.Elapsed;
                if (early > TimeSpan.Zero)
                {
                    await Task.Delay(early); // pacing, as fio's --rate_iops
                }
                long offset = (long)order[i] * plan.BlockBytes;
                FioBlock.Fill(block, offset, random);
                client.Write(offset, block);
                Acknowledged.Add(offset);
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException)
        {
            lock (Errors)
            {
                Errors.Add(_stopped ? "stopped by the runner" : e.Message);
            }
        }
    }
}

using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests.Faults;

/// <summary>
/// Writes every block of the volume once, in a seeded random order, over several NBD connections, in fio's crc32c
/// verify format, and records each acknowledgement the moment it arrives. Unlike fio it stops cleanly when its
/// server dies or stops answering (each request has a deadline), which the owner faults need.
/// </summary>
internal sealed class LedgerWriter(FaultPlan plan, VolumeLocation location)
{
    private static readonly TimeSpan RequestDeadline = TimeSpan.FromSeconds(20);
    private int _next = -1;

    public AcknowledgedWrites Acknowledged { get; } = new(plan.BlockBytes);

    /// <summary>The first error each connection met (a dead or silent owner), for the log.</summary>
    public List<string> Errors { get; } = [];

    public int TotalBlocks => (int)(plan.VolumeBytes / plan.BlockBytes);

    public bool CompletedEveryWrite => Acknowledged.Count == TotalBlocks;

    public async Task RunAsync()
    {
        var order = Enumerable.Range(0, TotalBlocks).ToArray();
        new Random(plan.Seed).Shuffle(order);
        int connections = Math.Min(plan.IoDepth, 4);
        await Task.WhenAll(Enumerable.Range(0, connections).Select(c => Task.Run(() => WriteAsync(order, plan.Seed * 31 + c))));
    }

    private async Task WriteAsync(int[] order, int seed)
    {
        var random = new Random(seed);
        var block = new byte[plan.BlockBytes];
        try
        {
            using var client = await MiniNbdClient.ConnectAsync(location.Host, location.Port, location.Export, RequestDeadline);
            for (int i = Interlocked.Increment(ref _next); i < order.Length; i = Interlocked.Increment(ref _next))
            {
                long offset = (long)order[i] * plan.BlockBytes;
                FioBlock.Fill(block, offset, random);
                client.Write(offset, block);
                Acknowledged.Add(offset);
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            lock (Errors)
            {
                Errors.Add(e.Message);
            }
        }
    }
}

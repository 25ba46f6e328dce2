using Cairn.Integration.Tests.Support;

namespace Cairn.Integration.Tests;

/// <summary>kill -9 of a real cairnd while fio and a flush-tracking client write; after restart nothing flushed is lost.</summary>
public sealed class CrashTests(ITestOutputHelper output)
{
    private const long MiB = 1 << 20;
    private const int LedgerBlocks = 8192;          // [0, 32 MiB) for the ledger
    private const long FioOffset = 32 * MiB;         // [32 MiB, 160 MiB) for fio
    private const long FioBytes = 128 * MiB;

    [Fact]
    public async Task Kill_9_during_writes_loses_no_write_acknowledged_before_the_last_flush()
    {
        await using var cairn = await CairnDaemon.StartAsync();
        (await cairn.CliAsync("volume", "create", "crash", "--size", "160MiB")).EnsureSuccess();
        var ledger = new WriteLedger(0, LedgerBlocks);
        int seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);

        for (int round = 1; round <= 3; round++)
        {
            using var stop = new CancellationTokenSource();
            var fio = StartFio(cairn.NbdUri("crash"), round);
            using var client = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "crash");
            var writer = Task.Run(() => ledger.Run(client, random, flushEvery: 1 + random.Next(64), stop.Token));

            // Let both run for a while: the ledger must complete some flushes, fio must be mid-flight.
            var deadline = DateTime.UtcNow.AddSeconds(60);
            var flushesBefore = ledger.FlushesCompleted;
            var crashAfter = TimeSpan.FromMilliseconds(1500 + random.Next(2500));
            var started = DateTime.UtcNow;
            while ((ledger.FlushesCompleted < flushesBefore + 5 || DateTime.UtcNow - started < crashAfter) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }
            Assert.True(ledger.FlushesCompleted >= flushesBefore + 5, "the ledger completed too few flushes before the crash\n" + cairn.Log);

            cairn.KillHard();
            await stop.CancelAsync();
            await writer.WaitAsync(TimeSpan.FromSeconds(60));
            var fioResult = await fio; // fails: its server died
            output.WriteLine($"round {round}: {ledger.WritesAcknowledged} writes acked, {ledger.FlushesCompleted} flushes; fio exit {fioResult.ExitCode}");

            await cairn.RestartAsync();
            using var reader = await MiniNbdClient.ConnectAsync(cairn.NbdPort, "crash");
            var problems = ledger.Verify(reader);
            Assert.True(problems.Count == 0, $"round {round}, seed {seed}:\n" + string.Join('\n', problems));
            AssertFioRegionIsConsistent(reader);
            ledger.AcceptCurrent(reader);
        }
    }

    private static Task<ToolResult> StartFio(string uri, int round) =>
        ToolRun.RunAsync("fio",
        [
            "--name=crashload", "--ioengine=nbd", $"--uri={uri}", $"--offset={FioOffset}", $"--size={FioBytes}",
            "--rw=randwrite", "--bs=4k", "--iodepth=32", "--numjobs=2", "--fsync=16", "--verify=crc32c", "--do_verify=0",
            "--time_based", "--runtime=120", $"--randseed={round}",
        ], TimeSpan.FromMinutes(3));

    /// <summary>Every block in fio's region is either never written (zeros) or a complete fio block for exactly that offset.</summary>
    private static void AssertFioRegionIsConsistent(MiniNbdClient reader)
    {
        var chunk = new byte[MiB];
        int written = 0;
        for (long offset = FioOffset; offset < FioOffset + FioBytes; offset += MiB)
        {
            reader.Read(offset, chunk);
            for (int i = 0; i < chunk.Length; i += 4096)
            {
                var block = chunk.AsSpan(i, 4096);
                if (block.IndexOfAnyExcept((byte)0) < 0)
                {
                    continue;
                }
                Assert.True(FioBlock.IsValidFor(block, offset + i - FioOffset) || FioBlock.IsValidFor(block, offset + i),
                    $"block at {offset + i} is neither zeros nor a whole fio block for that offset");
                written++;
            }
        }
        Assert.True(written > 0, "fio wrote nothing that survived; the test exercised nothing");
    }
}

using Cairn.BlockStore.Storage;

namespace Cairn.BlockStore.Tests;

public sealed class SimulatedMediumTests
{
    [Fact]
    public void Synced_writes_survive_a_crash_and_unsynced_ones_tear_per_sector()
    {
        var medium = new SimulatedMedium();
        using var f = medium.Open("f", create: true);
        f.WriteAt(0, Fill(4096, 1));
        f.Sync();
        medium.SyncDirectory();
        f.WriteAt(0, Fill(4096, 2));
        medium.Crash(new Random(3));
        var after = medium.ReadAllBytes("f");
        Assert.Equal(4096, after.Length);
        int newSectors = 0;
        for (int s = 0; s < 8; s++)
        {
            var sector = after.AsSpan(s * 512, 512);
            Assert.True(sector.SequenceEqual(Fill(512, 1)) || sector.SequenceEqual(Fill(512, 2)), "a sector is all old or all new");
            newSectors += sector[0] == 2 ? 1 : 0;
        }
        Assert.InRange(newSectors, 1, 7); // seed 3 tears this write
    }

    [Fact]
    public void Same_seed_same_outcome()
    {
        Assert.Equal(CrashOnce(42), CrashOnce(42));
        Assert.NotEqual(CrashOnce(42), CrashOnce(43));
    }

    [Fact]
    public void A_rename_not_followed_by_a_directory_sync_may_be_lost()
    {
        int lost = 0;
        for (int seed = 0; seed < 20; seed++)
        {
            var medium = new SimulatedMedium();
            using (var f = medium.Open("tmp", create: true))
            {
                f.WriteAt(0, [1]);
                f.Sync();
            }
            medium.Rename("tmp", "final");
            medium.Crash(new Random(seed));
            lost += medium.Exists("final") ? 0 : 1;
        }
        Assert.InRange(lost, 1, 19);
    }

    [Fact]
    public void A_scheduled_crash_fires_after_the_given_number_of_mutations()
    {
        var medium = new SimulatedMedium();
        using var f = medium.Open("f", create: true);
        medium.ScheduleCrash(2);
        f.WriteAt(0, [1]);
        f.WriteAt(1, [2]);
        Assert.Throws<SimulatedCrashException>(() => f.Sync());
        Assert.Throws<SimulatedCrashException>(() => f.ReadAt(0, new byte[1]));
        medium.Crash(new Random(1));
        _ = medium.Exists("f"); // usable again after the crash (whether "f" survived is up to the seed)
    }

    private static string CrashOnce(int seed)
    {
        var medium = new SimulatedMedium();
        using var f = medium.Open("f", create: true);
        medium.SyncDirectory();
        f.WriteAt(0, new byte[16 * 512]);
        f.Sync(); // durable length, so only sector contents vary with the seed
        for (int i = 0; i < 16; i++)
        {
            f.WriteAt(i * 512, Fill(512, (byte)(i + 1)));
        }
        medium.Crash(new Random(seed));
        return Convert.ToHexString(medium.ReadAllBytes("f"));
    }

    private static byte[] Fill(int length, byte value)
    {
        var b = new byte[length];
        b.AsSpan().Fill(value);
        return b;
    }
}

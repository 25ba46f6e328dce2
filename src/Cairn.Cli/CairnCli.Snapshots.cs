using System.CommandLine;

namespace Cairn.Cli;

public static partial class CairnCli
{
    private static Argument<string> VolumeArgument() => new("VOLUME") { Description = "Volume name." };

    private static Argument<string> SnapshotArgument() => new("NAME") { Description = "Snapshot name: 1-63 of a-z, 0-9, '-', '_', '.', starting with a letter or digit." };

    private static Command SnapshotCommands(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var createVolume = VolumeArgument();
        var createName = SnapshotArgument();
        var create = new Command("create", "Take a crash-consistent, read-only snapshot in constant time; clients keep writing.") { createVolume, createName };
        Bind(create, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.CreateSnapshotAsync(r.GetValue(createVolume)!, r.GetValue(createName)!, ct);
            Print(output, reply, s => output.Line($"Took snapshot '{s.Name}' of volume '{s.Volume}' ({s.Size}); read it at {s.Export ?? "-"}."));
        });

        var listVolume = VolumeArgument();
        var list = new Command("list", "List a volume's snapshots: creation time, size, exclusive space (freed by deleting) and shared space.") { listVolume };
        Bind(list, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.ListSnapshotsAsync(r.GetValue(listVolume)!, ct);
            Print(output, reply, l => output.Snapshots(r.GetValue(listVolume)!, l.Snapshots));
        });

        var deleteVolume = VolumeArgument();
        var deleteName = SnapshotArgument();
        var force = new Option<bool>("--force") { Description = "Delete even while clients read its export, disconnecting them." };
        var delete = new Command("delete", "Delete a snapshot (also one in the middle, or one clones came from); its space comes back in the background.")
        {
            deleteVolume, deleteName, force,
        };
        Bind(delete, g, stdout, env, async (r, api, output, ct) =>
        {
            string volume = r.GetValue(deleteVolume)!, name = r.GetValue(deleteName)!;
            await api.DeleteSnapshotAsync(volume, name, r.GetValue(force), ct);
            if (output.Json)
            {
                output.Line(System.Text.Json.JsonSerializer.Serialize(new DeletedDto($"{volume}@{name}", true), CliJson.Default.DeletedDto));
                return;
            }
            output.Line($"Deleted snapshot '{name}' of volume '{volume}'.");
        });
        return new Command("snapshot", "Take, list and delete read-only snapshots of volumes (export one read-only as VOLUME@NAME).") { create, list, delete };
    }

    private static IEnumerable<Command> VolumeSnapshotCommands(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        yield return CloneCommand(g, stdout, env);
        yield return RevertCommand(g, stdout, env);
        yield return ScrubCommand(g, stdout, env);
        yield return ScrubStatusCommand(g, stdout, env);
    }

    private static Command CloneCommand(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var source = new Argument<string>("SOURCE") { Description = "The snapshot to clone, as VOLUME@SNAPSHOT." };
        var name = new Argument<string>("NAME") { Description = "Name of the new volume." };
        var size = new Option<string?>("--size") { Description = "Size of the clone (default: the snapshot's); at least the snapshot's.", HelpName = "SIZE" };
        var clone = new Command("clone", "Create a writable volume from a snapshot instantly; it shares unchanged blocks with it.") { source, name, size };
        Bind(clone, g, stdout, env, async (r, api, output, ct) =>
        {
            string from = r.GetValue(source)!;
            int at = from.IndexOf('@', StringComparison.Ordinal);
            if (at <= 0 || at == from.Length - 1)
            {
                throw new CliException(CliException.Failed, $"SOURCE '{from}' must be VOLUME@SNAPSHOT, e.g. db@monday");
            }
            var reply = await api.CloneVolumeAsync(r.GetValue(name)!, from[..at], from[(at + 1)..], r.GetValue(size), ct);
            Print(output, reply, v =>
            {
                output.Line($"Cloned '{from}' as volume '{v.Name}' ({v.Size}).");
                output.Volume(v);
            });
        });
        return clone;
    }

    private static Command RevertCommand(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var volume = VolumeArgument();
        var snapshot = new Argument<string>("SNAPSHOT") { Description = "The snapshot whose content the volume gets back." };
        var force = new Option<bool>("--force") { Description = "Revert even while clients are connected, disconnecting them (their caches would not match)." };
        var revert = new Command("revert", "Make a volume's content a snapshot's again; newer snapshots stay. Refused while clients are connected unless --force.")
        {
            volume, snapshot, force,
        };
        Bind(revert, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.RevertVolumeAsync(r.GetValue(volume)!, r.GetValue(snapshot)!, r.GetValue(force), ct);
            Print(output, reply, v => output.Line($"Reverted volume '{v.Name}' to snapshot '{r.GetValue(snapshot)}'."));
        });
        return revert;
    }

    private static Command ScrubCommand(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var volume = VolumeArgument();
        var rate = new Option<string?>("--rate") { Description = "Read at most this much per second, e.g. 50MiB (default: as fast as the disk goes).", HelpName = "SIZE" };
        var noWait = new Option<bool>("--no-wait") { Description = "Start the scrub and return; see it later with cairn volume scrub-status." };
        var scrub = new Command("scrub", "Read every block of a volume and its snapshots (and its replicas' copies) and verify its checksum, rewriting bad blocks from a good replica, with a progress bar. Exit code 3 when bad blocks remain.")
        {
            volume, rate, noWait,
        };
        Bind(scrub, g, stdout, env, async (r, api, output, ct) =>
        {
            string name = r.GetValue(volume)!;
            var started = await api.StartScrubAsync(name, r.GetValue(rate), ct);
            if (r.GetValue(noWait))
            {
                Print(output, started, s => output.Line($"Scrub of volume '{name}' started; follow it with: cairn volume scrub-status {name}"));
                return;
            }
            var status = await output.FollowScrubAsync(started.Value, async c => (await api.GetScrubAsync(name, c)).Value, TimeSpan.FromMilliseconds(500), ct);
            ReportScrub(output, await api.GetScrubAsync(name, ct));
            ThrowIfBad(status);
        });
        return scrub;
    }

    private static Command ScrubStatusCommand(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var volume = VolumeArgument();
        var status = new Command("scrub-status", "Show the running or last scrub of a volume: progress, blocks verified, bad blocks and where.") { volume };
        Bind(status, g, stdout, env, async (r, api, output, ct) => ReportScrub(output, await api.GetScrubAsync(r.GetValue(volume)!, ct)));
        return status;
    }

    private static void ReportScrub(Output output, ApiClient.Reply<ScrubDto> reply) => Print(output, reply, s =>
    {
        if (s.State == "Running")
        {
            output.Line($"Scrub of volume '{s.Volume}' is running: {s.BlocksChecked}/{s.BlocksTotal} blocks, {s.ErrorCount} bad so far.");
            return;
        }
        output.ScrubResult(s);
    });

    private static void ThrowIfBad(ScrubDto status)
    {
        if (status.State == "Failed")
        {
            throw new CliException(CliException.Failed, $"scrub of volume '{status.Volume}' failed: {status.Failure}");
        }
        if (status.StillBad > 0)
        {
            throw new CliException(CliException.BadBlocks,
                $"scrub of volume '{status.Volume}' found {status.ErrorCount} bad blocks and could not repair {status.StillBad} of them (see REPAIR); restore those from a backup");
        }
    }
}

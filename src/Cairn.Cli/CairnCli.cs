using System.CommandLine;

namespace Cairn.Cli;

/// <summary>
/// The cairn command line. <see cref="RunAsync"/> is the whole program with its streams and environment
/// passed in, so tests run it in-process and read exactly what a user would see.
/// Exit codes: 0 success, 1 the API refused or the command line was wrong, 2 the API could not be reached,
/// 3 a scrub found bad blocks it could not repair.
/// </summary>
public static partial class CairnCli
{
    public const string DefaultApi = "http://127.0.0.1:9410";

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, Func<string, string?>? environment = null, CancellationToken cancellationToken = default)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var root = BuildCommands(stdout, environment);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            // A typo ("Unrecognized command or argument 'x'") says more than the "Required command" it also causes.
            var error = parsed.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parsed.Errors[0];
            await stderr.WriteLineAsync($"cairn: {ApiClient.OneLine(error.Message)} (see cairn --help)");
            return CliException.Failed;
        }
        try
        {
            return await parsed.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false }, cancellationToken);
        }
        catch (CliException e)
        {
            await stderr.WriteLineAsync($"cairn: {e.Message}");
            return e.ExitCode;
        }
        catch (OperationCanceledException)
        {
            await stderr.WriteLineAsync("cairn: cancelled");
            return CliException.Failed;
        }
        catch (Exception e)
        {
            // Still one line and a non-zero exit: scripts parse stderr, and a stack trace helps nobody there.
            await stderr.WriteLineAsync($"cairn: unexpected error: {ApiClient.OneLine(e.Message)}");
            return CliException.Failed;
        }
    }

    private sealed record Globals(Option<string?> Api, Option<bool> Json, Option<int> TimeoutSeconds);

    private static RootCommand BuildCommands(TextWriter stdout, Func<string, string?> environment)
    {
        var globals = new Globals(
            new Option<string?>("--api") { Description = $"cairnd REST API URL. Default: $CAIRN_API, else {DefaultApi}.", HelpName = "URL", Recursive = true },
            new Option<bool>("--json") { Description = "Print the API's JSON instead of tables.", Recursive = true },
            new Option<int>("--timeout") { Description = "Seconds to wait for the API.", DefaultValueFactory = _ => 30, HelpName = "SECONDS", Recursive = true });
        var root = new RootCommand("cairn: manage Cairn volumes, pools and nodes through the cairnd REST API.")
        {
            globals.Api, globals.Json, globals.TimeoutSeconds,
            VolumeCommands(globals, stdout, environment),
            SnapshotCommands(globals, stdout, environment),
            PoolCommands(globals, stdout, environment),
            NodeCommands(globals, stdout, environment),
            ClusterCommands(globals, stdout, environment),
        };
        return root;
    }

    private static Command VolumeCommands(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        Argument<string> NameArgument() => new("NAME") { Description = "Volume name: 1-63 of a-z, 0-9, '-', '_', '.', starting with a letter or digit." };
        Option<string> SizeOption(string what) => new("--size") { Description = what, Required = true, HelpName = "SIZE" };

        var name = NameArgument();
        var size = SizeOption("Size of the thin volume: bytes or a number with a unit, e.g. 512MiB, 10GiB, 1TiB.");
        var placement = new PlacementOptions();
        var create = new Command("create", "Create a thin volume (it uses no space until written) on the node placement chooses.")
        {
            name, size, placement.Replicas, placement.Spread, placement.Node, placement.Pool, placement.DryRun, placement.Explain,
        };
        Bind(create, g, stdout, env, async (r, api, output, ct) =>
        {
            var request = placement.Request(r, r.GetValue(name)!, r.GetValue(size)!);
            if (r.GetValue(placement.DryRun) || r.GetValue(placement.Explain))
            {
                var plan = await api.PlanVolumeAsync(request, ct);
                bool explain = r.GetValue(placement.Explain);
                if (plan.Value.Placed || explain || output.Json)
                {
                    // A failed plan is still worth seeing when asked why (or as data); otherwise the error line says it all.
                    Print(output, plan, p => output.Placement(p, explain));
                }
                if (!plan.Value.Placed)
                {
                    throw new CliException(CliException.Failed, $"cannot place volume '{request.Name}': {plan.Value.Reason}");
                }
                if (r.GetValue(placement.DryRun))
                {
                    return;
                }
            }
            var reply = await api.CreateVolumeAsync(request, ct);
            if (output.Json)
            {
                output.RawJson(reply.Json);
                return;
            }
            output.Line($"Created volume '{reply.Value.Name}' ({reply.Value.Size}) on node '{reply.Value.Node}' in pool '{reply.Value.Pool}'.");
            output.Volume(reply.Value);
        });

        var list = new Command("list", "List every node's volumes with size, allocation, node, clients and export address.");
        Bind(list, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.ListVolumesAsync(ct);
            Print(output, reply, v => output.Volumes(v.Volumes));
        });

        var showName = NameArgument();
        var show = new Command("show", "Show one volume: size, allocated bytes, export address, connected clients.") { showName };
        Bind(show, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.GetVolumeAsync(r.GetValue(showName)!, ct);
            Print(output, reply, output.Volume);
        });

        var growName = NameArgument();
        var growSize = SizeOption("New size, larger than the current one (volumes never shrink), e.g. 20GiB.");
        var grow = new Command("grow", "Grow a volume online; connected clients see the new size on reconnect.") { growName, growSize };
        Bind(grow, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.GrowVolumeAsync(r.GetValue(growName)!, r.GetValue(growSize)!, ct);
            Print(output, reply, v => output.Line($"Volume '{v.Name}' is now {v.Size}."));
        });

        var replicasName = NameArgument();
        var replicasCount = new Argument<int>("COUNT") { Description = "How many copies the volume should have (1-5)." };
        var replicas = new Command("replicas", "Change a volume's replica count online: new replicas are copied in the background while IO goes on.")
        {
            replicasName, replicasCount,
        };
        Bind(replicas, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.SetReplicaCountAsync(r.GetValue(replicasName)!, r.GetValue(replicasCount), ct);
            Print(output, reply, v => output.Line(
                $"Volume '{v.Name}' will have {r.GetValue(replicasCount)} replicas (has {v.Replicas?.Count ?? 1}); see progress with: cairn volume show {v.Name}"));
        });

        var deleteName = NameArgument();
        var force = new Option<bool>("--force") { Description = "Delete even while clients are connected, disconnecting them." };
        var delete = new Command("delete", "Delete a volume and its data. Refused while clients are connected unless --force.") { deleteName, force };
        Bind(delete, g, stdout, env, async (r, api, output, ct) =>
        {
            string volume = r.GetValue(deleteName)!;
            await api.DeleteVolumeAsync(volume, r.GetValue(force), ct);
            if (output.Json)
            {
                output.Line(System.Text.Json.JsonSerializer.Serialize(new DeletedDto(volume, true), CliJson.Default.DeletedDto));
                return;
            }
            output.Line($"Deleted volume '{volume}'.");
        });

        var volume = new Command("volume", "Create, list, show, grow, delete, clone, revert and scrub volumes; change their replica count; set who may log in over iSCSI.") { create, list, show, grow, replicas, delete, IscsiAccessCommand(g, stdout, env, NameArgument()) };
        foreach (var command in VolumeSnapshotCommands(g, stdout, env))
        {
            volume.Add(command);
        }
        return volume;
    }

    private static Command IscsiAccessCommand(Globals g, TextWriter stdout, Func<string, string?> env, Argument<string> name)
    {
        var allow = new Option<string[]>("--allow") { Description = "An initiator name (iqn....) that may log in; repeat for several. Without it any initiator may.", HelpName = "IQN", AllowMultipleArgumentsPerToken = false };
        var chapUser = new Option<string?>("--chap-user") { Description = "CHAP user name initiators must log in with.", HelpName = "USER" };
        var chapSecret = new Option<FileInfo?>("--chap-secret-file") { Description = "File holding the CHAP secret (12-16 bytes; one trailing newline is ignored).", HelpName = "FILE" };
        var mutualUser = new Option<string?>("--mutual-chap-user") { Description = "User name the target answers with when the initiator asks for mutual CHAP.", HelpName = "USER" };
        var mutualSecret = new Option<FileInfo?>("--mutual-chap-secret-file") { Description = "File holding the target's secret for mutual CHAP (not the CHAP secret).", HelpName = "FILE" };
        var open = new Option<bool>("--open") { Description = "Let any initiator in without authentication (the default of a new volume)." };
        var command = new Command("iscsi-access", "Set who may log in to a volume over iSCSI (replaces the whole policy). Secrets are never shown back.")
        {
            name, allow, chapUser, chapSecret, mutualUser, mutualSecret, open,
        };
        Bind(command, g, stdout, env, async (r, api, output, ct) =>
        {
            string[] allowed = r.GetValue(allow) ?? [];
            var chap = ReadCredentials("--chap", r.GetValue(chapUser), r.GetValue(chapSecret));
            var mutual = ReadCredentials("--mutual-chap", r.GetValue(mutualUser), r.GetValue(mutualSecret));
            bool restricted = allowed.Length > 0 || chap is not null || mutual is not null;
            if (r.GetValue(open) == restricted)
            {
                throw new CliException(CliException.Failed, restricted
                    ? "--open lets everyone in; it cannot be combined with --allow or CHAP options"
                    : "say who may log in: --allow IQN and/or --chap-user with --chap-secret-file, or --open for anyone");
            }
            var reply = await api.SetIscsiAccessAsync(r.GetValue(name)!, new SetIscsiAccessDto(allowed, chap, mutual), ct);
            Print(output, reply, output.Volume);
        });
        return command;
    }

    /// <summary>A user and the secret read from a file, or null when neither option was given.</summary>
    private static ChapDto? ReadCredentials(string prefix, string? user, FileInfo? secretFile)
    {
        if (user is null && secretFile is null)
        {
            return null;
        }
        if (user is null || secretFile is null)
        {
            throw new CliException(CliException.Failed, $"{prefix}-user and {prefix}-secret-file go together");
        }
        string secret;
        try
        {
            secret = File.ReadAllText(secretFile.FullName);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException(CliException.Failed, $"cannot read {prefix}-secret-file {secretFile.FullName}: {e.Message}");
        }
        // Editors and `echo` add one line end; it is not part of the secret.
        string trimmed = secret.EndsWith("\r\n", StringComparison.Ordinal) ? secret[..^2] : secret.EndsWith('\n') ? secret[..^1] : secret;
        return new ChapDto(user, trimmed);
    }

    private static Command PoolCommands(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var list = new Command("list", "List pools with capacity, used and free space.");
        Bind(list, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.ListPoolsAsync(ct);
            Print(output, reply, p => output.Pools(p.Pools));
        });
        return new Command("pool", "Inspect the storage pools of this node.") { list };
    }

    private static Command NodeCommands(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        Argument<string> NameArgument() => new("NAME") { Description = "Node name, as given to cairnd --node." };

        var list = new Command("list", "List the cluster's nodes: state (Up, Down, Draining), zone, rack, last heartbeat, pools.");
        Bind(list, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.ListNodesAsync(ct);
            Print(output, reply, n => output.Nodes(n.Nodes));
        });

        var showName = NameArgument();
        var show = new Command("show", "Show one node: state, addresses, failure domains, heartbeat, pools.") { showName };
        Bind(show, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.GetNodeAsync(r.GetValue(showName)!, ct);
            Print(output, reply, output.Node);
        });

        Command Drain(string verb, bool draining, string description)
        {
            var name = NameArgument();
            var command = new Command(verb, description) { name };
            Bind(command, g, stdout, env, async (r, api, output, ct) =>
            {
                var reply = await api.SetDrainingAsync(r.GetValue(name)!, draining, ct);
                Print(output, reply, n => output.Line($"Node '{n.Name}' is {(draining ? "draining" : "no longer draining")} (state {n.State})."));
            });
            return command;
        }

        return new Command("node", "List and inspect the cluster's nodes; drain and undrain them.")
        {
            list, show,
            Drain("drain", true, "Mark a node Draining: it takes no new work. Kept across the node's restarts."),
            Drain("undrain", false, "Clear a node's Draining flag."),
        };
    }

    private static Command ClusterCommands(Globals g, TextWriter stdout, Func<string, string?> env)
    {
        var status = new Command("status", "Show the cluster store, this node, the elected controller and how many nodes are up.");
        Bind(status, g, stdout, env, async (r, api, output, ct) =>
        {
            var reply = await api.GetClusterAsync(ct);
            Print(output, reply, output.Cluster);
        });
        return new Command("cluster", "Inspect the cluster.") { status };
    }

    private static void Print<T>(Output output, ApiClient.Reply<T> reply, Action<T> human)
    {
        if (output.Json)
        {
            output.RawJson(reply.Json);
        }
        else
        {
            human(reply.Value);
        }
    }

    private static void Bind(Command command, Globals g, TextWriter stdout, Func<string, string?> env,
        Func<ParseResult, ApiClient, Output, CancellationToken, Task> run)
    {
        command.SetAction(async (result, ct) =>
        {
            string? fromEnv = env("CAIRN_API");
            string api = result.GetValue(g.Api) ?? (string.IsNullOrWhiteSpace(fromEnv) ? DefaultApi : fromEnv);
            int timeoutSeconds = result.GetValue(g.TimeoutSeconds);
            if (timeoutSeconds <= 0)
            {
                throw new CliException(CliException.Failed, $"--timeout must be a positive number of seconds, not {timeoutSeconds}");
            }
            using var client = new ApiClient(api, TimeSpan.FromSeconds(timeoutSeconds));
            await run(result, client, new Output(stdout, result.GetValue(g.Json)), ct);
            return 0;
        });
    }
}

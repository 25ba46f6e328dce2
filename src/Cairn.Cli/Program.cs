// cairn: the command-line client. All behaviour lives in CairnCli so tests can run it in-process.
return await Cairn.Cli.CairnCli.RunAsync(args, Console.Out, Console.Error);

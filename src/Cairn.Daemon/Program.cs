// cairnd: a thin host. Everything it runs lives in libraries; this only hands over the command line.
return await Cairn.Daemon.DaemonCommandLine.RunAsync(args, Console.Out, Console.Error);

namespace Cairn.Integration.Tests.Support;

/// <summary>Finds the built daemon and CLI next to this test assembly's build configuration.</summary>
internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    /// <summary>Debug or Release, whichever this test assembly was built as.</summary>
    public static string Configuration { get; } =
        AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";

    public static string Daemon => Binary("Cairn.Daemon", "cairnd");
    public static string Cli => Binary("Cairn.Cli", "cairn");

    private static string Binary(string project, string assembly)
    {
        var path = Path.Combine(Root, "src", project, "bin", Configuration, "net10.0", assembly);
        return File.Exists(path)
            ? path
            : throw new FileNotFoundException($"{assembly} is not built at {path}; run `dotnet build -c {Configuration}` first");
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Cairn.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException("cannot find the repository root (Cairn.slnx) above " + AppContext.BaseDirectory);
    }
}

namespace Cairn.Cli;

/// <summary>A failure to report as one line "cairn: REASON" with <see cref="ExitCode"/>.</summary>
internal sealed class CliException(int exitCode, string message) : Exception(message)
{
    /// <summary>The API answered with an error, or the command line was wrong.</summary>
    public const int Failed = 1;

    /// <summary>The API could not be reached at all.</summary>
    public const int Unreachable = 2;

    /// <summary>A scrub found blocks that fail their checksum and could not repair them all.</summary>
    public const int BadBlocks = 3;

    public int ExitCode { get; } = exitCode;
}

using System.Diagnostics;

namespace Cairn.Testing;

/// <summary>
/// A drive whose IO fails on demand, under a real ext4 filesystem: ext4 on a loop device over a file that nbdfuse
/// exposes from nbdkit's memory plugin behind its error filter. While the trigger file exists, every read and write
/// the kernel sends down fails with EIO (the page cache hides writes until the next fsync, as on a real failing disk).
/// <code>
///   MountPath (ext4) → /dev/loopN → fuse/disk (nbdfuse) → nbdkit --filter=error memory SIZE error-file=inject
/// </code>
/// This stands in for device-mapper's error/flakey targets, which this kernel lacks (no CONFIG_BLK_DEV_DM).
/// MountPath lies in a shared bind mount: each `ip netns exec` copies the mounts into a mount namespace of its own
/// (as slaves), and only a shared parent passes an unmount on to those copies, which <see cref="RepairAsync"/> needs.
/// </summary>
public sealed class FaultyDrive : IAsyncDisposable
{
    private readonly string _dir;
    private Process? _nbdfuse;
    private string? _loopDevice;

    private FaultyDrive(string dir) => _dir = dir;

    /// <summary>Where the ext4 filesystem is mounted; put a pool directory under it.</summary>
    public string MountPath => Path.Combine(SharedPath, "mnt");

    /// <summary>A bind mount of itself marked shared, so that mounts and unmounts under it reach every namespace's copy.</summary>
    private string SharedPath => Path.Combine(_dir, "shared");

    private string FuseDirectory => Path.Combine(_dir, "fuse");

    private string BackingFile => Path.Combine(FuseDirectory, "disk");

    private string TriggerFile => Path.Combine(_dir, "inject");

    public bool Failing => File.Exists(TriggerFile);

    public static async Task<FaultyDrive> CreateAsync(string dir, long sizeBytes)
    {
        var drive = new FaultyDrive(dir);
        try
        {
            await drive.AssembleAsync(sizeBytes);
        }
        catch
        {
            await drive.DisposeAsync();
            throw;
        }
        return drive;
    }

    private async Task AssembleAsync(long sizeBytes)
    {
        Directory.CreateDirectory(FuseDirectory);
        Directory.CreateDirectory(SharedPath);
        await HostCommand.RunAsync("mount", "--bind", SharedPath, SharedPath);
        await HostCommand.RunAsync("mount", "--make-shared", SharedPath);
        Directory.CreateDirectory(MountPath);
        var start = new ProcessStartInfo(HostCommand.Resolve("nbdfuse"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[]
                 {
                     BackingFile, "[", HostCommand.Resolve("nbdkit"), "--exit-with-parent", "--filter=error", "memory", sizeBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "error-rate=100%", $"error-file={TriggerFile}", "error=EIO", "]",
                 })
        {
            start.ArgumentList.Add(argument);
        }
        _nbdfuse = Process.Start(start) ?? throw new InvalidOperationException("could not start nbdfuse");
        _ = _nbdfuse.StandardOutput.ReadToEndAsync();
        var stderr = _nbdfuse.StandardError.ReadToEndAsync();
        await Eventually.HoldsAsync(() =>
            _nbdfuse.HasExited ? throw new InvalidOperationException($"nbdfuse exited: {stderr.Result}") : File.Exists(BackingFile),
            TimeSpan.FromSeconds(30), "nbdfuse exposes the faulty drive");
        _loopDevice = (await HostCommand.RunAsync("losetup", "--find", "--show", BackingFile)).Trim();
        await HostCommand.RunAsync("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", _loopDevice);
        await HostCommand.RunAsync("mount", "-o", "errors=continue", _loopDevice, MountPath);
    }

    /// <summary>From now on every IO to the drive fails with EIO.</summary>
    public void InjectErrors() => File.WriteAllText(TriggerFile, "");

    /// <summary>IO works again (what ext4 made of the failures stays, as on a real disk).</summary>
    public void Heal() => File.Delete(TriggerFile);

    /// <summary>
    /// What an operator does once a drive that returned errors works again: unmount, check and repair the filesystem
    /// (e2fsck -fy), mount it again. Needed because ext4 aborts its journal when a journal write fails and stays
    /// read-only (EROFS) until remounted, whatever errors= says. Nothing may hold files open on it: stop its node first.
    /// Returns e2fsck's verdict.
    /// </summary>
    public async Task<string> RepairAsync()
    {
        if (Failing)
        {
            throw new InvalidOperationException("heal the drive before repairing its filesystem");
        }
        await HostCommand.RunAsync("umount", MountPath);
        var check = await HostCommand.TryAsync("e2fsck", "-fy", _loopDevice!);
        if (check.ExitCode > 2) // 1: errors corrected, 2: corrected, reboot advised (a mounted root); more: not corrected
        {
            throw new InvalidOperationException($"e2fsck could not repair the faulty drive's filesystem (exit {check.ExitCode}): {check.StandardOutput}{check.StandardError}");
        }
        await HostCommand.RunAsync("mount", "-o", "errors=continue", _loopDevice!, MountPath);
        return check.ExitCode == 0 ? "clean" : $"repaired (e2fsck exit {check.ExitCode})";
    }

    public async ValueTask DisposeAsync()
    {
        if (File.Exists(TriggerFile))
        {
            Heal();
        }
        await HostCommand.TryAsync("umount", "-l", MountPath);
        await HostCommand.TryAsync("umount", "-l", SharedPath);
        if (_loopDevice is not null)
        {
            await HostCommand.TryAsync("losetup", "-d", _loopDevice);
        }
        await HostCommand.TryAsync("umount", "-l", FuseDirectory);
        if (_nbdfuse is { } process)
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
            await process.WaitForExitAsync();
            process.Dispose();
        }
    }

    /// <summary>Undoes a drive whose test process died: unmounts the filesystem, detaches its loop device, unmounts nbdfuse (which ends it and nbdkit).</summary>
    internal static async Task RemoveLeftoversAsync(string dir)
    {
        string shared = Path.Combine(dir, "shared");
        string fuse = Path.Combine(dir, "fuse");
        string mounts = await File.ReadAllTextAsync("/proc/mounts");
        foreach (string mount in new[] { Path.Combine(shared, "mnt"), shared, Path.Combine(dir, "mnt") }) // "mnt": the layout before the shared mount
        {
            if (mounts.Contains($" {mount} ", StringComparison.Ordinal))
            {
                await HostCommand.TryAsync("umount", "-l", mount);
            }
        }
        string loops = (await HostCommand.TryAsync("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE")).StandardOutput;
        foreach (string line in loops.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] columns = line.Split(' ', 2, StringSplitOptions.TrimEntries);
            if (columns.Length == 2 && columns[1].StartsWith(fuse, StringComparison.Ordinal))
            {
                await HostCommand.TryAsync("losetup", "-d", columns[0]);
            }
        }
        if (mounts.Contains($" {fuse} ", StringComparison.Ordinal))
        {
            await HostCommand.TryAsync("umount", "-l", fuse);
        }
    }
}

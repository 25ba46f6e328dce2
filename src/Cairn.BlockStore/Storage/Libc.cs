using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Cairn.BlockStore.Storage;

/// <summary>The few Linux calls .NET does not expose: fdatasync, fallocate(PUNCH_HOLE), directory fsync, O_DIRECT opens and writes.</summary>
internal static unsafe partial class Libc
{
    internal const int EINTR = 4;
    internal const int EINVAL = 22;
    internal const int ENOSPC = 28;
    internal const int EOPNOTSUPP = 95;
    private const int FallocKeepSize = 0x01;
    private const int FallocPunchHole = 0x02;

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FdataSync(int fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int FAllocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenPath(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    internal static partial nint PWrite(int fd, byte* buffer, nuint count, long offset);

    /// <summary>Opens an existing file write-only with O_DIRECT (and O_CLOEXEC); null when it cannot (no such file, a filesystem that refuses O_DIRECT).</summary>
    internal static SafeFileHandle? OpenDirect(string path)
    {
        const int WriteOnly = 0x1;
        const int CloseOnExec = 0x80000;
        int fd = OpenPath(path, WriteOnly | CloseOnExec | DirectFlag);
        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>O_DIRECT's value differs between architectures (asm-generic, arm, powerpc).</summary>
    private static int DirectFlag => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.Arm or Architecture.Armv6 or Architecture.Arm64 => 0x10000,
        Architecture.Ppc64le => 0x20000,
        _ => 0x4000,
    };

    internal static void DataSync(int fd)
    {
        if (FdataSync(fd) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"fdatasync failed (errno {errno})", errno);
        }
    }

    /// <summary>Returns false when the filesystem cannot punch holes (EOPNOTSUPP) or refuses; space then stays allocated.</summary>
    internal static bool PunchHole(int fd, long offset, long length)
        => FAllocate(fd, FallocPunchHole | FallocKeepSize, offset, length) == 0;

    internal static void SyncDirectory(string directory)
    {
        int fd = OpenPath(directory, 0); // O_RDONLY works on directories
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot open directory '{directory}' to sync it (errno {errno})", errno);
        }
        try
        {
            if (FSync(fd) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new IOException($"fsync of directory '{directory}' failed (errno {errno})", errno);
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }
}

using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Cairn.Testing;

/// <summary>
/// Bit rot on purpose: finds a 4 KiB block's content in a pool's data file (blocks lie at 4 KiB boundaries) and flips
/// one byte of it on disk, behind the pool's back, as a decaying disk would. Give each block of a test distinct
/// content, so that it is found exactly once. Works while the pool is open, in this process or another: the file is
/// opened with open(2) itself, since .NET's own open would take the advisory lock an open pool holds.
/// </summary>
internal static partial class DataFileCorruption
{
    public const string DataFileName = "data.cairn";
    private const int Block = 4096;
    private const int ReadWrite = 2; // O_RDWR

    /// <summary>Flips a byte in every copy of <paramref name="content"/> in <paramref name="poolDirectory"/>'s data file; returns how many it found.</summary>
    public static int CorruptBlock(string poolDirectory, byte[] content)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(content.Length, Block);
        string path = Path.Combine(poolDirectory, DataFileName);
        using var file = OpenUnlocked(path);
        byte[] block = new byte[Block];
        int found = 0;
        for (long at = 0; RandomAccess.Read(file, block, at) == Block; at += Block)
        {
            if (block.AsSpan().SequenceEqual(content))
            {
                RandomAccess.Write(file, new[] { (byte)(block[1000] ^ 0x40) }, at + 1000);
                found++;
            }
        }
        RandomAccess.FlushToDisk(file);
        return found;
    }

    /// <summary>The data file's bytes, to show that something left it alone.</summary>
    public static byte[] Snapshot(string poolDirectory)
    {
        string path = Path.Combine(poolDirectory, DataFileName);
        using var file = OpenUnlocked(path);
        byte[] bytes = new byte[RandomAccess.GetLength(file)];
        int read = 0;
        while (read < bytes.Length)
        {
            int n = RandomAccess.Read(file, bytes.AsSpan(read), read);
            if (n == 0)
            {
                break;
            }
            read += n;
        }
        return bytes[..read];
    }

    private static SafeFileHandle OpenUnlocked(string path)
    {
        int fd = Open(path, ReadWrite);
        if (fd < 0)
        {
            throw new IOException($"open {path}: errno {Marshal.GetLastPInvokeError()}");
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);
}

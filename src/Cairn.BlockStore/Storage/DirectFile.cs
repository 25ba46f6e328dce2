using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Cairn.BlockStore.Storage;

/// <summary>
/// A second descriptor of a pool file, opened with O_DIRECT (Linux): writes through it bypass the page cache, so cold
/// data (a rebuild's copy) neither pays the cache's copy and writeback nor evicts what clients read. O_DIRECT wants the
/// buffer, the offset and the length aligned to the device's logical block: offsets and lengths that are not multiples
/// of 4 KiB are refused here (the caller writes them through the cache), and a source that is not 4 KiB-aligned in
/// memory is copied into a pooled aligned buffer first. Durability is unchanged: O_DIRECT skips the page cache, not the
/// device's write cache nor the file's allocation and size metadata, so the file's fdatasync still covers these writes.
/// The kernel writes back and drops cached pages of the range itself, so buffered reads see what a direct write wrote.
/// </summary>
internal sealed unsafe class DirectFile : IDisposable
{
    public const int Alignment = 4096;
    /// <summary>The aligned buffers' size: one block store run (1 MiB); a larger unaligned source goes through in pieces.</summary>
    public const int BufferBytes = 1 << 20;

    /// <summary>Aligned buffers between writes, shared by every pool in the process: a few, since a write holds one only while it copies and writes.</summary>
    private static readonly nint[] SpareBuffers = new nint[Math.Max(4, 2 * Environment.ProcessorCount)];
    private static long _buffersAllocated;

    private readonly SafeFileHandle _handle;
    private volatile bool _refused;
    private long _writtenBytes;

    private DirectFile(SafeFileHandle handle) => _handle = handle;

    /// <summary>Bytes written past the page cache (for tests and diagnostics).</summary>
    public long WrittenBytes => Interlocked.Read(ref _writtenBytes);

    /// <summary>Aligned buffers allocated so far in the process: stays put once writes reuse the spares (tests check it).</summary>
    internal static long BuffersAllocated => Interlocked.Read(ref _buffersAllocated);

    /// <summary>Opens <paramref name="path"/> for direct writes; null off Linux or when the filesystem refuses O_DIRECT (tmpfs before Linux 6.6: EINVAL).</summary>
    public static DirectFile? TryOpen(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        var handle = Libc.OpenDirect(path);
        return handle is null ? null : new DirectFile(handle);
    }

    /// <summary>
    /// Writes <paramref name="source"/> at <paramref name="offset"/> past the page cache. False when it cannot, having
    /// written nothing or a prefix: the offset or the length is not a multiple of <see cref="Alignment"/>, or the
    /// filesystem refused direct IO (EINVAL; then it is not tried again). Other errors throw, as a buffered write's would.
    /// </summary>
    public bool TryWrite(long offset, ReadOnlySpan<byte> source)
    {
        if (_refused || ((offset | (long)source.Length) & (Alignment - 1)) != 0)
        {
            return false;
        }
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            int fd = (int)_handle.DangerousGetHandle();
            fixed (byte* start = source)
            {
                return ((nint)start & (Alignment - 1)) == 0 ? WriteAll(fd, start, source.Length, offset) : WriteCopied(fd, source, offset);
            }
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    private bool WriteCopied(int fd, ReadOnlySpan<byte> source, long offset)
    {
        byte* buffer = RentBuffer();
        try
        {
            for (int done = 0; done < source.Length; done += BufferBytes)
            {
                int n = Math.Min(BufferBytes, source.Length - done);
                source.Slice(done, n).CopyTo(new Span<byte>(buffer, n));
                if (!WriteAll(fd, buffer, n, offset + done))
                {
                    return false;
                }
            }
            return true;
        }
        finally
        {
            ReturnBuffer(buffer);
        }
    }

    private bool WriteAll(int fd, byte* from, int length, long offset)
    {
        while (length > 0)
        {
            nint n = Libc.PWrite(fd, from, (nuint)length, offset);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR)
                {
                    continue;
                }
                if (errno == Libc.EINVAL)
                {
                    _refused = true; // the filesystem opened the file O_DIRECT but does not do direct IO on it
                    return false;
                }
                throw new IOException($"direct write of {length} bytes at offset {offset} failed (errno {errno})", errno);
            }
            Interlocked.Add(ref _writtenBytes, n);
            from += n;
            offset += n;
            length -= (int)n;
        }
        return true;
    }

    private static byte* RentBuffer()
    {
        for (int i = 0; i < SpareBuffers.Length; i++)
        {
            nint spare = Interlocked.Exchange(ref SpareBuffers[i], 0);
            if (spare != 0)
            {
                return (byte*)spare;
            }
        }
        Interlocked.Increment(ref _buffersAllocated);
        return (byte*)NativeMemory.AlignedAlloc(BufferBytes, Alignment);
    }

    private static void ReturnBuffer(byte* buffer)
    {
        for (int i = 0; i < SpareBuffers.Length; i++)
        {
            if (Interlocked.CompareExchange(ref SpareBuffers[i], (nint)buffer, 0) == 0)
            {
                return;
            }
        }
        NativeMemory.AlignedFree(buffer);
    }

    public void Dispose() => _handle.Dispose();
}

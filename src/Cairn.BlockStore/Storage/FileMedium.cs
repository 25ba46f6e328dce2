using Microsoft.Win32.SafeHandles;

namespace Cairn.BlockStore.Storage;

/// <summary>A pool directory on a real filesystem.</summary>
internal sealed class FileMedium : IPoolMedium
{
    public FileMedium(string directory) => Location = Path.GetFullPath(directory);

    public string Location { get; }

    public long AvailableBytes => new DriveInfo(Location).AvailableFreeSpace;

    public bool Exists(string name) => File.Exists(PathOf(name));

    public IReadOnlyList<string> ListFiles()
    {
        var names = new List<string>();
        foreach (var path in System.IO.Directory.EnumerateFiles(Location))
        {
            names.Add(Path.GetFileName(path));
        }
        names.Sort(StringComparer.Ordinal);
        return names;
    }

    public IStorageFile Open(string name, bool create, bool exclusive = false)
    {
        // FileShare.None takes an advisory flock on Unix, so a second process cannot open the same pool.
        var handle = File.OpenHandle(PathOf(name), create ? FileMode.OpenOrCreate : FileMode.Open,
            FileAccess.ReadWrite, exclusive ? FileShare.None : FileShare.Read);
        return new RealFile(handle, PathOf(name));
    }

    public void Rename(string from, string to) => File.Move(PathOf(from), PathOf(to), overwrite: true);

    public void Delete(string name) => File.Delete(PathOf(name));

    public void SyncDirectory()
    {
        if (OperatingSystem.IsLinux())
        {
            Libc.SyncDirectory(Location);
        }
    }

    private string PathOf(string name) => Path.Combine(Location, name);

    private sealed class RealFile(SafeFileHandle handle, string path) : IStorageFile
    {
        private readonly Lock _directLock = new();
        private DirectFile? _direct;
        private volatile bool _directTried;

        public long Length => RandomAccess.GetLength(handle);

        public int ReadAt(long offset, Span<byte> destination)
        {
            int total = 0;
            while (total < destination.Length)
            {
                int n = RandomAccess.Read(handle, destination[total..], offset + total);
                if (n == 0)
                {
                    break;
                }
                total += n;
            }
            return total;
        }

        public void WriteAt(long offset, ReadOnlySpan<byte> source) => RandomAccess.Write(handle, source, offset);

        public void WriteUncachedAt(long offset, ReadOnlySpan<byte> source)
        {
            if (Direct() is not { } direct || !direct.TryWrite(offset, source))
            {
                WriteAt(offset, source);
            }
        }

        /// <summary>The O_DIRECT descriptor, opened on first use (only files that get cold data need one); null where there is none.</summary>
        private DirectFile? Direct()
        {
            if (_directTried)
            {
                return _direct;
            }
            lock (_directLock)
            {
                if (!_directTried && !handle.IsClosed)
                {
                    _direct = DirectFile.TryOpen(path);
                    _directTried = true;
                }
                return _direct;
            }
        }

        public void Sync()
        {
            if (!OperatingSystem.IsLinux())
            {
                RandomAccess.FlushToDisk(handle);
                return;
            }
            bool added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                Libc.DataSync((int)handle.DangerousGetHandle());
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }
        }

        public void SetLength(long lengthBytes) => RandomAccess.SetLength(handle, lengthBytes);

        public void PunchHole(long offset, long lengthBytes)
        {
            if (!OperatingSystem.IsLinux())
            {
                return;
            }
            bool added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                _ = Libc.PunchHole((int)handle.DangerousGetHandle(), offset, lengthBytes);
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }
        }

        public void Dispose()
        {
            lock (_directLock)
            {
                _directTried = true; // no descriptor is opened after this one is closed
                _direct?.Dispose();
            }
            handle.Dispose();
        }
    }
}

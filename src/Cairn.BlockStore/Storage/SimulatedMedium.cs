namespace Cairn.BlockStore.Storage;

/// <summary>Thrown by <see cref="SimulatedMedium"/> when a scheduled crash fires; the pool that saw it must be abandoned.</summary>
internal sealed class SimulatedCrashException() : Exception("simulated crash (power loss)");

/// <summary>
/// An in-memory pool directory for deterministic tests. It models what a power cut does to a
/// Linux filesystem: every file keeps a durable image and a current image; <see cref="IStorageFile.Sync"/>
/// copies current to durable. <see cref="Crash"/> keeps, for every 512-byte sector written since the
/// last sync, either the old or the new content (chosen by the seeded random), so in-flight writes tear.
/// Directory operations (create, rename, delete) since the last directory sync survive as a random prefix.
/// </summary>
/// <remarks>All operations take one lock, so concurrent tests work; single-threaded use is fully deterministic.</remarks>
internal sealed class SimulatedMedium : IPoolMedium
{
    public const int SectorBytes = 512;

    private readonly Lock _lock = new();
    private Dictionary<string, SimFile> _names = new(StringComparer.Ordinal);
    private Dictionary<string, SimFile> _durableNames = new(StringComparer.Ordinal);
    private readonly List<DirOp> _pendingDirOps = [];
    private readonly List<Fault> _faults = [];
    private long _operationsUntilCrash = -1;
    private bool _crashed;

    public SimulatedMedium(string location = "sim://pool") => Location = location;

    public string Location { get; }

    /// <summary>What the simulated filesystem reports as free; file growth beyond it fails with ENOSPC.</summary>
    public long AvailableBytes { get; set; } = 1L << 40;

    /// <summary>Total bytes of file content; growth past <see cref="AvailableBytes"/> fails with ENOSPC.</summary>
    public long UsedBytes
    {
        get
        {
            lock (_lock)
            {
                long total = 0;
                foreach (var f in _names.Values)
                {
                    total += f.Length;
                }
                return total;
            }
        }
    }

    /// <summary>Counts medium operations that change state (writes, syncs, renames...).</summary>
    public long MutationCount { get; private set; }

    /// <summary>Bytes passed to PunchHole on any file, so tests can see which frees gave space back to the filesystem.</summary>
    public long PunchedBytes { get; private set; }

    /// <summary>Bytes passed to WriteUncachedAt on any file, so tests can see which writes asked to bypass the page cache.</summary>
    public long UncachedBytes { get; private set; }

    /// <summary>After <paramref name="operations"/> more mutating operations, the next one throws <see cref="SimulatedCrashException"/> (after applying itself as an unsynced, tearable change).</summary>
    public void ScheduleCrash(long operations)
    {
        lock (_lock)
        {
            _operationsUntilCrash = operations;
        }
    }

    /// <summary>Makes reads or writes of a byte range of a file fail with EIO.</summary>
    public void InjectFault(string name, long offset, long lengthBytes, bool reads, bool writes)
    {
        lock (_lock)
        {
            _faults.Add(new Fault(name, offset, lengthBytes, reads, writes));
        }
    }

    public void ClearFaults()
    {
        lock (_lock)
        {
            _faults.Clear();
        }
    }

    /// <summary>Power loss: unsynced sectors are kept or lost at random, unsynced directory changes survive as a random prefix.</summary>
    public void Crash(Random random)
    {
        lock (_lock)
        {
            int keep = random.Next(_pendingDirOps.Count + 1);
            var names = new Dictionary<string, SimFile>(_durableNames, StringComparer.Ordinal);
            for (int i = 0; i < keep; i++)
            {
                _pendingDirOps[i].Apply(names);
            }
            _pendingDirOps.Clear();
            var seen = new HashSet<SimFile>();
            foreach (var f in _names.Values)
            {
                if (seen.Add(f))
                {
                    f.Crash(random);
                }
            }
            foreach (var f in names.Values)
            {
                if (seen.Add(f))
                {
                    f.Crash(random);
                }
            }
            _names = names;
            _durableNames = new Dictionary<string, SimFile>(names, StringComparer.Ordinal);
            _crashed = false;
            _operationsUntilCrash = -1;
        }
    }

    /// <summary>Adds a file whose content is already durable (loading a golden pool).</summary>
    public void AddFile(string name, ReadOnlySpan<byte> content)
    {
        lock (_lock)
        {
            var file = new SimFile();
            file.WriteRaw(0, content, durableToo: true);
            file.Sync();
            _names[name] = file;
            _durableNames[name] = file;
        }
    }

    /// <summary>A copy of a file's current bytes (for golden tests and corruption tests).</summary>
    public byte[] ReadAllBytes(string name)
    {
        lock (_lock)
        {
            return _names[name].Snapshot();
        }
    }

    /// <summary>Overwrites bytes both in the current and durable image, bypassing the pool (bit rot).</summary>
    public void Corrupt(string name, long offset, ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            _names[name].WriteRaw(offset, bytes, durableToo: true);
        }
    }

    public bool Exists(string name)
    {
        lock (_lock)
        {
            ThrowIfCrashed();
            return _names.ContainsKey(name);
        }
    }

    public IReadOnlyList<string> ListFiles()
    {
        lock (_lock)
        {
            ThrowIfCrashed();
            var list = new List<string>(_names.Keys);
            list.Sort(StringComparer.Ordinal);
            return list;
        }
    }

    public IStorageFile Open(string name, bool create, bool exclusive = false)
    {
        lock (_lock)
        {
            ThrowIfCrashed();
            if (_names.TryGetValue(name, out var file))
            {
                return new Handle(this, name, file);
            }
            if (!create)
            {
                throw new FileNotFoundException($"simulated file '{name}' does not exist", name);
            }
            Mutate();
            file = new SimFile();
            _names[name] = file;
            _pendingDirOps.Add(new DirOp(DirOpKind.Create, name, null, file));
            return new Handle(this, name, file);
        }
    }

    public void Rename(string from, string to)
    {
        lock (_lock)
        {
            ThrowIfCrashed();
            var file = _names[from];
            _names.Remove(from);
            _names[to] = file;
            _pendingDirOps.Add(new DirOp(DirOpKind.Rename, from, to, file));
            Mutate();
        }
    }

    public void Delete(string name)
    {
        lock (_lock)
        {
            ThrowIfCrashed();
            if (_names.Remove(name))
            {
                _pendingDirOps.Add(new DirOp(DirOpKind.Delete, name, null, null));
                Mutate();
            }
        }
    }

    public void SyncDirectory()
    {
        lock (_lock)
        {
            ThrowIfCrashed();
            Mutate();
            _durableNames = new Dictionary<string, SimFile>(_names, StringComparer.Ordinal);
            _pendingDirOps.Clear();
        }
    }

    private void ThrowIfCrashed()
    {
        if (_crashed)
        {
            throw new SimulatedCrashException();
        }
    }

    /// <summary>Counts a mutation; fires the scheduled crash after the mutation has been applied (unsynced).</summary>
    private void Mutate()
    {
        MutationCount++;
        if (_operationsUntilCrash == 0)
        {
            _crashed = true;
            throw new SimulatedCrashException();
        }
        if (_operationsUntilCrash > 0)
        {
            _operationsUntilCrash--;
        }
    }

    private void CheckFault(string name, long offset, long length, bool write)
    {
        foreach (var f in _faults)
        {
            if (f.Name == name && (write ? f.Writes : f.Reads) && offset < f.Offset + f.Length && f.Offset < offset + length)
            {
                throw new IOException($"simulated EIO on '{name}' at {offset}", 5);
            }
        }
    }

    private enum DirOpKind { Create, Rename, Delete }

    private sealed record DirOp(DirOpKind Kind, string Name, string? To, SimFile? File)
    {
        public void Apply(Dictionary<string, SimFile> names)
        {
            switch (Kind)
            {
                case DirOpKind.Create:
                    names[Name] = File!;
                    break;
                case DirOpKind.Rename:
                    names.Remove(Name);
                    names[To!] = File!;
                    break;
                default:
                    names.Remove(Name);
                    break;
            }
        }
    }

    private sealed record Fault(string Name, long Offset, long Length, bool Reads, bool Writes);

    private sealed class Handle(SimulatedMedium medium, string name, SimFile file) : IStorageFile
    {
        public long Length
        {
            get
            {
                lock (medium._lock)
                {
                    medium.ThrowIfCrashed();
                    return file.Length;
                }
            }
        }

        public int ReadAt(long offset, Span<byte> destination)
        {
            lock (medium._lock)
            {
                medium.ThrowIfCrashed();
                medium.CheckFault(name, offset, destination.Length, write: false);
                return file.Read(offset, destination);
            }
        }

        public void WriteAt(long offset, ReadOnlySpan<byte> source)
        {
            lock (medium._lock)
            {
                medium.ThrowIfCrashed();
                medium.CheckFault(name, offset, source.Length, write: true);
                long growth = offset + source.Length - file.Length;
                if (growth > 0 && medium.UsedBytes + growth > medium.AvailableBytes)
                {
                    throw new IOException("simulated ENOSPC", Libc.ENOSPC);
                }
                file.WriteRaw(offset, source, durableToo: false);
                medium.Mutate();
            }
        }

        /// <summary>A write like any other: past the page cache or through it, an unsynced write is kept, lost or torn alike at a crash.</summary>
        public void WriteUncachedAt(long offset, ReadOnlySpan<byte> source)
        {
            lock (medium._lock)
            {
                medium.ThrowIfCrashed();
                medium.UncachedBytes += source.Length;
                WriteAt(offset, source);
            }
        }

        public void Sync()
        {
            lock (medium._lock)
            {
                medium.ThrowIfCrashed();
                medium.Mutate();
                file.Sync();
            }
        }

        public void SetLength(long lengthBytes)
        {
            lock (medium._lock)
            {
                medium.ThrowIfCrashed();
                file.SetLength(lengthBytes);
                medium.Mutate();
            }
        }

        public void PunchHole(long offset, long lengthBytes)
        {
            lock (medium._lock)
            {
                medium.ThrowIfCrashed();
                medium.PunchedBytes += lengthBytes;
                file.Zero(offset, lengthBytes);
                medium.Mutate();
            }
        }

        public void Dispose()
        {
        }
    }

    /// <summary>One inode: durable and current images plus the sectors that differ.</summary>
    private sealed class SimFile
    {
        private byte[] _current = [];
        private byte[] _durable = [];
        private long _length;
        private long _durableLength;
        private readonly HashSet<long> _dirtySectors = [];

        public long Length => _length;

        public byte[] Snapshot() => _current.AsSpan(0, (int)_length).ToArray();

        public int Read(long offset, Span<byte> destination)
        {
            if (offset >= _length)
            {
                return 0;
            }
            int n = (int)Math.Min(destination.Length, _length - offset);
            _current.AsSpan((int)offset, n).CopyTo(destination);
            return n;
        }

        public void WriteRaw(long offset, ReadOnlySpan<byte> source, bool durableToo)
        {
            long end = offset + source.Length;
            Ensure(ref _current, end);
            source.CopyTo(_current.AsSpan((int)offset));
            _length = Math.Max(_length, end);
            if (durableToo)
            {
                Ensure(ref _durable, end);
                source.CopyTo(_durable.AsSpan((int)offset));
                _durableLength = Math.Max(_durableLength, end);
                return;
            }
            MarkDirty(offset, end);
        }

        public void Zero(long offset, long length)
        {
            long end = Math.Min(offset + length, _length);
            if (end <= offset)
            {
                return;
            }
            _current.AsSpan((int)offset, (int)(end - offset)).Clear();
            MarkDirty(offset, end);
        }

        public void SetLength(long length)
        {
            Ensure(ref _current, length);
            if (length < _length)
            {
                _current.AsSpan((int)length, (int)(_length - length)).Clear();
                MarkDirty(length, _length);
            }
            _length = length;
        }

        public void Sync()
        {
            Ensure(ref _durable, _length);
            foreach (long sector in _dirtySectors)
            {
                CopySector(sector, _current, _durable);
            }
            _dirtySectors.Clear();
            _durableLength = _length;
        }

        public void Crash(Random random)
        {
            var sectors = new long[_dirtySectors.Count];
            _dirtySectors.CopyTo(sectors);
            Array.Sort(sectors);
            long length = _length == _durableLength || random.Next(2) == 0 ? _durableLength : _length;
            Ensure(ref _durable, Math.Max(_length, length));
            foreach (long sector in sectors)
            {
                if (random.Next(2) == 0)
                {
                    CopySector(sector, _current, _durable);
                }
            }
            _dirtySectors.Clear();
            _length = length;
            _durableLength = length;
            if (_durable.Length > length)
            {
                _durable.AsSpan((int)length).Clear();
            }
            _current = (byte[])_durable.Clone();
        }

        private void MarkDirty(long start, long end)
        {
            for (long s = start / SectorBytes; s * SectorBytes < end; s++)
            {
                _dirtySectors.Add(s);
            }
        }

        private static void CopySector(long sector, byte[] from, byte[] to)
        {
            int start = (int)(sector * SectorBytes);
            int n = Math.Min(SectorBytes, Math.Min(from.Length, to.Length) - start);
            if (n > 0)
            {
                from.AsSpan(start, n).CopyTo(to.AsSpan(start));
            }
        }

        private static void Ensure(ref byte[] buffer, long length)
        {
            if (buffer.Length >= length)
            {
                return;
            }
            long size = Math.Max(length, Math.Max(4096, buffer.Length * 2L));
            Array.Resize(ref buffer, (int)size);
        }
    }
}

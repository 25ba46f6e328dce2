namespace Cairn.BlockStore.Storage;

/// <summary>
/// The pool directory as the block store sees it: a handful of named files plus the directory's own durability.
/// Real pools use <see cref="FileMedium"/>; tests use <see cref="SimulatedMedium"/>, which can crash and tear writes.
/// </summary>
internal interface IPoolMedium
{
    /// <summary>Label for messages (the directory path for real pools).</summary>
    string Location { get; }

    /// <summary>Bytes the underlying filesystem can still give us.</summary>
    long AvailableBytes { get; }

    bool Exists(string name);

    IReadOnlyList<string> ListFiles();

    /// <summary>Opens a file; with <paramref name="create"/> a missing file is created empty. <paramref name="exclusive"/> locks it against a second opener.</summary>
    IStorageFile Open(string name, bool create, bool exclusive = false);

    /// <summary>Atomically replaces <paramref name="to"/> with <paramref name="from"/>; durable only after <see cref="SyncDirectory"/>.</summary>
    void Rename(string from, string to);

    void Delete(string name);

    /// <summary>Makes creates, renames and deletes durable (fsync of the directory).</summary>
    void SyncDirectory();
}

/// <summary>One file of a pool: positional IO, durability barrier, sparse-space release.</summary>
internal interface IStorageFile : IDisposable
{
    long Length { get; }

    /// <summary>Reads up to destination.Length bytes; fewer only at end of file.</summary>
    int ReadAt(long offset, Span<byte> destination);

    void WriteAt(long offset, ReadOnlySpan<byte> source);

    /// <summary>
    /// Writes like <see cref="WriteAt"/>, past the page cache where the file can (O_DIRECT on Linux): for cold data,
    /// which should neither cost the cache's copy and writeback nor evict what is read. Where it cannot (an offset or a
    /// length that is not a multiple of 4 KiB, a filesystem that refuses O_DIRECT) it is a <see cref="WriteAt"/>.
    /// Durable, like any write, only after <see cref="Sync"/>.
    /// </summary>
    void WriteUncachedAt(long offset, ReadOnlySpan<byte> source);

    /// <summary>fdatasync: everything written before is durable when this returns.</summary>
    void Sync();

    void SetLength(long lengthBytes);

    /// <summary>Gives the byte range back to the filesystem (reads as zeros afterwards); best effort.</summary>
    void PunchHole(long offset, long lengthBytes);
}

using Microsoft.Extensions.Logging;

namespace Cairn.ClusterStore;

// Durability: snapshot file + append-only log. Crash-safety argument:
//  - a log record is visible only after its frame (length + CRC32C) is complete and fsynced;
//    a torn tail fails its CRC and is cut off on open, losing only the uncommitted transaction;
//  - a snapshot is written to a temp file, fsynced, then renamed over the old one, so the old or the
//    new snapshot is always whole; log records at or below the snapshot's revision are skipped on replay,
//    so a crash between renaming the snapshot and resetting the log is harmless; the directory is fsynced
//    after each rename so the two renames cannot reach the disk in the opposite order.
public sealed partial class EmbeddedClusterStore
{
    private const string LogFileName = "store.log";
    private const string SnapshotFileName = "store.snapshot";

    private FileStream? _log;
    private bool _logBroken;

    private string LogPath => Path.Combine(Directory, LogFileName);
    private string SnapshotPath => Path.Combine(Directory, SnapshotFileName);

    private void Load()
    {
        System.IO.Directory.CreateDirectory(Directory);
        lock (_lock)
        {
            long snapshotRevision = LoadSnapshotLocked();
            int replayed = ReplayLogLocked(snapshotRevision);
            _historyStartRevision = _revision + 1;
            _logger.LogInformation("cluster store opened at {Directory}: revision {Revision}, {Keys} keys, {Replayed} log records replayed",
                Directory, _revision, _items.Count, replayed);
            DropLeasedKeysLocked();
        }
    }

    private long LoadSnapshotLocked()
    {
        if (!File.Exists(SnapshotPath))
        {
            return 0;
        }
        var data = File.ReadAllBytes(SnapshotPath);
        StoreFormat.CheckHeader(data, StoreFormat.SnapshotMagic, SnapshotPath);
        if (!StoreFormat.TryReadFrame(data, StoreFormat.HeaderBytes, out var payload, out _))
        {
            // Snapshots are replaced atomically, so a bad one is real damage, not a crash artefact: refuse to guess.
            throw new InvalidDataException($"{SnapshotPath} fails its checksum; the cluster store is damaged");
        }
        var (revision, items) = StoreFormat.DecodeSnapshot(payload);
        foreach (var kv in items)
        {
            _items[kv.Key] = kv;
        }
        _revision = revision;
        return revision;
    }

    private int ReplayLogLocked(long snapshotRevision)
    {
        if (!File.Exists(LogPath) || new FileInfo(LogPath).Length < StoreFormat.HeaderBytes)
        {
            // Missing, or a crash while creating it before its header was durable: start a fresh log.
            ResetLogLocked();
            return 0;
        }
        var data = File.ReadAllBytes(LogPath);
        StoreFormat.CheckHeader(data, StoreFormat.LogMagic, LogPath);
        int offset = StoreFormat.HeaderBytes;
        int replayed = 0;
        while (StoreFormat.TryReadFrame(data, offset, out var payload, out int next))
        {
            var (revision, ops) = StoreFormat.DecodeTransaction(payload);
            if (revision > snapshotRevision)
            {
                ApplyLocked(revision, ops);
                replayed++;
            }
            offset = next;
        }
        _log = new FileStream(LogPath, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        if (offset < data.Length)
        {
            _logger.LogWarning("cluster store log {Path}: dropped a torn tail of {Bytes} bytes at offset {Offset} (an unfinished write before a crash)",
                LogPath, data.Length - offset, offset);
            _log.SetLength(offset);
            _log.Flush(flushToDisk: true);
        }
        _log.Position = offset;
        return replayed;
    }

    private void AppendToLogLocked(long revision, IReadOnlyList<TxnOp> ops)
    {
        if (_logBroken || _log is null)
        {
            throw new IOException($"the cluster store log {LogPath} failed earlier; restart cairnd to recover");
        }
        var frame = StoreFormat.Frame(StoreFormat.EncodeTransaction(revision, ops));
        long start = _log.Position;
        try
        {
            _log.Write(frame);
            _log.Flush(flushToDisk: true);
        }
        catch (IOException)
        {
            // Cut the partial frame off so later commits are not appended behind garbage (replay stops at the first bad frame).
            try
            {
                _log.SetLength(start);
                _log.Position = start;
            }
            catch (IOException)
            {
                _logBroken = true;
            }
            throw;
        }
    }

    private void CompactIfLargeLocked()
    {
        if (_log is not null && _log.Length > _options.CompactLogBytes)
        {
            CompactLocked();
        }
    }

    /// <summary>Writes every live key to a new snapshot and starts an empty log.</summary>
    internal void CompactLocked()
    {
        var payload = StoreFormat.EncodeSnapshot(_revision, _items.Values, _items.Count);
        string temp = SnapshotPath + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(StoreFormat.Header(StoreFormat.SnapshotMagic));
            file.Write(StoreFormat.Frame(payload));
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, SnapshotPath, overwrite: true);
        DirectorySync.Flush(Directory); // the snapshot must be durable before the log it replaces is emptied
        ResetLogLocked();
        _logger.LogInformation("cluster store compacted: snapshot at revision {Revision} with {Keys} keys", _revision, _items.Count);
    }

    internal void Compact()
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            CompactLocked();
        }
    }

    private void ResetLogLocked()
    {
        _log?.Dispose();
        string temp = LogPath + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(StoreFormat.Header(StoreFormat.LogMagic));
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, LogPath, overwrite: true);
        DirectorySync.Flush(Directory);
        _log = new FileStream(LogPath, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        _log.Position = _log.Length;
        _logBroken = false;
    }

    private void CloseFiles()
    {
        _log?.Dispose();
        _log = null;
    }
}

using Cairn.BlockStore.Format;
using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>
/// Sync points, checkpoints and space reclamation. The ordering that makes the store crash-safe:
/// data is written to fresh blocks and fdatasync'd BEFORE the journal batch that points at it is appended,
/// and a block a batch stops referencing is reused only after that batch is durable and every read that
/// might still be reading the block has finished.
/// </summary>
public sealed partial class BlockPool
{
    /// <summary>Guards the open batch; taken inside a volume's lock so map order and record order agree.</summary>
    internal readonly Lock BatchLock = new();
    private JournalBatch _batch = new();
    private JournalBatch _spareBatch = new();
    /// <summary>Sequence of the open batch; a flush must see every batch up to the one open when it started become durable.</summary>
    private long _openSequence = 1;

    private readonly Lock _commitLock = new();
    private long _durableSequence;
    private IStorageFile _journal = null!;
    private long _journalEnd;
    private ulong _journalSequence;
    private ulong _generation;
    private volatile Exception? _fault;

    /// <summary>
    /// Why the pool refuses IO, or null while it is healthy. Set when a metadata sync failed: after a failed fsync the
    /// page cache can no longer be trusted, so the pool stays failed until it is opened again (cairnd restarted).
    /// </summary>
    public string? Fault => _fault is { } fault ? $"metadata sync failed ({fault.Message}); it refuses IO until reopened (restart cairnd)" : null;

    // Reclamation: frees wait in the open batch, then (durable) in _durableFrees, then one grace period in _graceFrees.
    private readonly Lock _freeLock = new();
    private FreeLists _durableFrees = new();
    private FreeLists _graceFrees = new();
    private long _pendingFreeBlocks;

    // Background commit (PoolOptions.CommitInterval): a thread that runs sync points so frees become reusable without flushes.
    private Thread? _committer;
    private readonly object _commitSignal = new(); // Monitor wait/pulse, so not a System.Threading.Lock
    /// <summary>1 from when a writer asks for a commit until a sync point takes the open batch.</summary>
    private int _commitRequested;
    /// <summary>A writer that brings the open batch's frees to this many blocks wakes the committer.</summary>
    private long _commitFreeBlocks = long.MaxValue;

    // Two-phase read epochs: readers count themselves under the current parity, in a counter striped by processor
    // (one 64-byte cache line each) so concurrent readers on different cores do not fight over one line.
    private const int EpochStripes = 16;
    private const int EpochStride = 8;
    private readonly long[] _readers = new long[2 * EpochStripes * EpochStride];
    private int _parity;

    /// <summary>The open batch; only touch it while holding <see cref="BatchLock"/>.</summary>
    internal JournalBatch OpenBatch => _batch;

    /// <summary>Blocks unlinked but not yet back in the allocator (waiting for a sync point or for readers).</summary>
    internal long PendingFreeBlocks => Volatile.Read(ref _pendingFreeBlocks);

    /// <summary>Records written since the last sync point (tests: has the committer run?).</summary>
    internal int OpenBatchRecords
    {
        get
        {
            lock (BatchLock)
            {
                return _batch.RecordCount;
            }
        }
    }

    internal void CountPendingFrees(int blocks)
    {
        Interlocked.Add(ref _pendingFreeBlocks, blocks);
        // A racy look at the open batch is enough: at worst one extra or one later commit.
        if (blocks > 0 && Volatile.Read(ref _batch).FreeCount >= _commitFreeBlocks && Interlocked.Exchange(ref _commitRequested, 1) == 0)
        {
            lock (_commitSignal)
            {
                Monitor.Pulse(_commitSignal); // once per batch: the sync point that takes the batch clears the request
            }
        }
    }

    /// <summary>Starts the background committer unless <see cref="PoolOptions.CommitInterval"/> disables it.</summary>
    private void StartCommitter()
    {
        if (_options.CommitInterval is not { } interval || interval <= TimeSpan.Zero)
        {
            return;
        }
        long bytes = Math.Min(_options.CommitPendingFreeBytes, CapacityBytes / 8);
        _commitFreeBlocks = Math.Max(1, bytes / PoolFormat.BlockBytes);
        _committer = new Thread(() => CommitLoop(interval)) { IsBackground = true, Name = "cairn-commit" };
        _committer.Start();
    }

    /// <summary>Stops the committer (part of Dispose, before the final sync). Waits for a commit in progress.</summary>
    private void StopCommitter()
    {
        if (_committer is null)
        {
            return;
        }
        lock (_commitSignal)
        {
            Monitor.Pulse(_commitSignal); // the pool is already closed: the loop sees it and returns
        }
        _committer.Join();
        _committer = null;
    }

    /// <summary>
    /// Runs on the committer thread, never on a writer's: writers only contend for the batch lock while the open batch is
    /// swapped and for the free lock while blocks are handed back; the fdatasyncs run under the commit lock alone, which
    /// writers take only when their batch is over <see cref="PoolOptions.MaxBatchBytes"/> or the pool is out of space.
    /// </summary>
    private void CommitLoop(TimeSpan interval)
    {
        while (true)
        {
            lock (_commitSignal)
            {
                if (Volatile.Read(ref _commitRequested) == 0 && !IsClosed)
                {
                    Monitor.Wait(_commitSignal, interval);
                }
            }
            if (IsClosed || _fault is not null)
            {
                return; // Dispose does the final sync; after a fault the pool refuses writes until reopened
            }
            try
            {
                BackgroundCommit();
            }
            catch (Exception ex) when (ex is BlockDeviceException or IOException)
            {
                // No room for the journal: the next interval retries. A failed sync faults the pool (see EnterFault) and ends the loop.
                Volatile.Write(ref _commitRequested, 0);
            }
        }
    }

    private void BackgroundCommit()
    {
        bool hasRecords;
        lock (BatchLock)
        {
            hasRecords = _batch.RecordCount > 0;
            if (!hasRecords)
            {
                // A writer that looked at a batch just taken by a sync point may have asked again: nothing to take,
                // so drop the request rather than loop on it.
                Volatile.Write(ref _commitRequested, 0);
            }
        }
        if (hasRecords)
        {
            SyncPoint(Volatile.Read(ref _openSequence)); // also hands durable frees to the grace period
        }
        else if (Volatile.Read(ref _pendingFreeBlocks) > 0)
        {
            lock (_freeLock)
            {
                AdvanceGrace(); // frees already durable but held back by readers earlier
            }
        }
    }

    /// <summary>Called after appending records: bounds the memory held by un-synced records.</summary>
    internal void AfterAppend()
    {
        if (_batch.PayloadBytes >= _options.MaxBatchBytes)
        {
            SyncPoint(Volatile.Read(ref _openSequence));
        }
    }

    /// <summary>FLUSH: every write that completed before this call is durable when it returns. Concurrent callers share one sync.</summary>
    internal void Flush()
    {
        ThrowIfUnusable();
        SyncPoint(Volatile.Read(ref _openSequence));
    }

    /// <summary>Syncs and writes a checkpoint now (tests, tools; later: before a scrub or snapshot export).</summary>
    internal void CheckpointNow()
    {
        ThrowIfUnusable();
        lock (_commitLock)
        {
            Checkpoint();
        }
    }

    private void SyncPoint(long targetSequence)
    {
        lock (_commitLock)
        {
            SyncPointLocked(targetSequence);
            if (_journalEnd >= _options.CheckpointJournalBytes && _fault is null)
            {
                Checkpoint();
            }
        }
    }

    private void SyncPointLocked(long targetSequence)
    {
        if (_durableSequence >= targetSequence)
        {
            return; // a sync that started after our writes completed already covered them (group commit)
        }
        ThrowIfFaulted();
        JournalBatch batch;
        long sequence;
        lock (BatchLock)
        {
            (batch, sequence) = TakeOpenBatch();
        }
        CommitBatch(batch, sequence);
    }

    private void ThrowIfFaulted()
    {
        if (_fault is not null)
        {
            ThrowHelper.Throw(BlockError.Io, $"pool '{Name}' failed to sync metadata earlier ({_fault.Message}); reopen it to recover");
        }
    }

    /// <summary>Swaps in an empty batch. Caller holds the batch lock.</summary>
    private (JournalBatch Batch, long Sequence) TakeOpenBatch()
    {
        var batch = _batch;
        Volatile.Write(ref _batch, _spareBatch);
        Volatile.Write(ref _commitRequested, 0); // the frees that asked for a commit are in this sync point
        return (batch, _openSequence++);
    }

    /// <summary>Makes a taken batch durable, then hands its frees to reclamation. Caller holds the commit lock.</summary>
    private void CommitBatch(JournalBatch batch, long sequence)
    {
        WriteBatch(batch);
        _durableSequence = sequence;
        // Look at the batch itself, not only at the counter: a writer counts its frees just after it leaves the
        // batch lock, so a batch can hold frees the counter does not show yet (they would leak until reopen).
        if (batch.FreeCount > 0 || Volatile.Read(ref _pendingFreeBlocks) > 0)
        {
            lock (_freeLock)
            {
                _durableFrees.Reuse.AddRange(batch.Frees);
                _durableFrees.Discard.AddRange(batch.Discards);
                AdvanceGrace();
            }
        }
        batch.Reset();
        _spareBatch = batch;
    }

    private void WriteBatch(JournalBatch batch)
    {
        if (batch.RecordCount == 0)
        {
            return;
        }
        try
        {
            _data.Sync(); // the records below may only name data that is already durable
        }
        catch (IOException ex)
        {
            throw EnterFault(ex);
        }
        var bytes = batch.Seal(_journalSequence + 1);
        try
        {
            _journal.WriteAt(_journalEnd, bytes);
        }
        catch (IOException ex) when (ThrowHelper.IsNoSpace(ex))
        {
            PutBack(batch);
            throw new BlockDeviceException(BlockError.NoSpace, $"pool '{Name}': no space left for the metadata journal", ex);
        }
        catch (IOException ex)
        {
            throw EnterFault(ex);
        }
        try
        {
            _journal.Sync();
        }
        catch (IOException ex)
        {
            throw EnterFault(ex);
        }
        _journalSequence++;
        _journalEnd += bytes.Length;
    }

    /// <summary>A batch that could not be appended goes back in front of the records that arrived meanwhile; nothing is lost.</summary>
    private void PutBack(JournalBatch batch)
    {
        lock (BatchLock)
        {
            batch.Append(_batch);
            _batch.Reset();
            (_batch, _spareBatch) = (batch, _batch);
        }
    }

    /// <summary>After a failed fsync the page cache can no longer be trusted (fsyncgate): refuse further writes until reopened.</summary>
    private BlockDeviceException EnterFault(IOException ex)
    {
        _fault = ex;
        return new BlockDeviceException(BlockError.Io, $"pool '{Name}': metadata sync failed ({ex.Message}); the pool refuses writes until reopened", ex);
    }

    /// <summary>
    /// Writes all maps to a new checkpoint and starts an empty journal for its generation. Runs under the commit lock.
    /// The maps are captured exactly at a batch boundary: under the volumes lock and the batch lock, the open batch is
    /// taken and every live map is forked (a page-directory copy), so the checkpoint holds the state right after that
    /// batch and the new journal exactly what came later. Snapshots need that: replaying a CreateSnapshot record over
    /// a map that already held later writes would put those writes into the snapshot. Writers go on meanwhile.
    /// </summary>
    private void Checkpoint()
    {
        ThrowIfFaulted();
        ulong generation = _generation + 1;
        List<CheckpointNode> nodes;
        uint nextIndex;
        JournalBatch batch;
        long sequence;
        lock (_volumesLock)
        {
            nextIndex = _nextVolumeIndex;
            lock (BatchLock)
            {
                (batch, sequence) = TakeOpenBatch();
                nodes = CaptureMaps();
            }
        }
        try
        {
            CommitBatch(batch, sequence); // into the old journal: the checkpoint follows it
        }
        catch (BlockDeviceException ex) when (ex.Error == BlockError.NoSpace)
        {
            return; // the batch went back into the open one; no checkpoint this time
        }
        try
        {
            using (var tmp = _medium.Open(PoolFormat.CheckpointTempFile, create: true))
            {
                tmp.SetLength(0);
                CheckpointFile.Write(tmp, generation, _header.PoolId, nextIndex, nodes);
                tmp.Sync(); // every block the maps name is durable: its batch's data sync came first
            }
            _medium.Rename(PoolFormat.CheckpointTempFile, PoolFormat.CheckpointFile);
        }
        catch (IOException)
        {
            TryDelete(PoolFormat.CheckpointTempFile);
            return; // keep appending to the current journal; the next sync point retries
        }
        try
        {
            _medium.SyncDirectory();
            // From here the new checkpoint may be the authoritative one: no batch may go to the old journal.
            var journal = _medium.Open(PoolFormat.JournalFile(generation), create: true);
            JournalFile.WriteHeader(journal, generation, _header.PoolId);
            journal.Sync();
            _medium.SyncDirectory();
            _journal.Dispose();
            _journal = journal;
            TryDelete(PoolFormat.JournalFile(_generation));
        }
        catch (IOException ex)
        {
            throw EnterFault(ex);
        }
        _generation = generation;
        _journalEnd = JournalFile.HeaderBytes;
        _journalSequence = 0;
    }

    private void TryDelete(string name)
    {
        try
        {
            _medium.Delete(name);
        }
        catch (IOException)
        {
            // Stale files are removed again on the next open.
        }
    }

    /// <summary>Enters a read epoch; returns the counter slot to pass to <see cref="ExitEpoch"/>.</summary>
    internal int EnterEpoch()
    {
        int parity = Volatile.Read(ref _parity);
        int slot = ((parity * EpochStripes) + (Thread.GetCurrentProcessorId() & (EpochStripes - 1))) * EpochStride;
        Interlocked.Increment(ref _readers[slot]);
        return slot;
    }

    internal void ExitEpoch(int slot) => Interlocked.Decrement(ref _readers[slot]);

    private long ReadersUnder(int parity)
    {
        long total = 0;
        for (int stripe = 0; stripe < EpochStripes; stripe++)
        {
            total += Volatile.Read(ref _readers[((parity * EpochStripes) + stripe) * EpochStride]);
        }
        return total;
    }

    /// <summary>
    /// Grace periods: blocks in <see cref="_graceFrees"/> were unlinked before the last parity flip, so only readers
    /// counted under the previous parity can still hold them. Once those drain, the blocks are free. Caller holds _freeLock.
    /// </summary>
    private void AdvanceGrace()
    {
        for (int step = 0; step < 2; step++)
        {
            int previous = 1 - _parity;
            if (ReadersUnder(previous) != 0)
            {
                return;
            }
            if (_graceFrees.Count > 0)
            {
                Release(_graceFrees);
                _graceFrees.Clear();
            }
            if (_durableFrees.Count == 0)
            {
                return;
            }
            (_graceFrees, _durableFrees) = (_durableFrees, _graceFrees);
            Interlocked.Exchange(ref _parity, previous);
        }
    }

    /// <summary>Frees of one stage: blocks unlinked by overwrites (kept) and blocks the user gave back (punched).</summary>
    private sealed class FreeLists
    {
        public readonly List<uint> Reuse = [];
        public readonly List<uint> Discard = [];

        public int Count => Reuse.Count + Discard.Count;

        public void Clear()
        {
            Reuse.Clear();
            Discard.Clear();
        }
    }

    private void Release(FreeLists frees)
    {
        // Overwrite frees keep their filesystem space: the allocator reuses them lowest-first while their pages are
        // still in the page cache; punching would drop those pages and make every reuse a fresh page and a fresh extent.
        Release(frees.Reuse, punch: false);
        Release(frees.Discard, punch: true);
    }

    /// <summary>Returns blocks to the allocator, punching long runs out of the data file first (never after: the block could be reused).</summary>
    private void Release(List<uint> blocks, bool punch)
    {
        blocks.Sort();
        int i = 0;
        while (i < blocks.Count)
        {
            int run = 1;
            while (i + run < blocks.Count && blocks[i + run] == blocks[i] + run)
            {
                run++;
            }
            if (punch && run >= _options.PunchHoleMinBlocks)
            {
                try
                {
                    _data.PunchHole((long)blocks[i] << PoolFormat.BlockShift, (long)run << PoolFormat.BlockShift);
                }
                catch (IOException)
                {
                    // Best effort: the space stays allocated in the filesystem but is free for us.
                }
            }
            _allocator.Free(blocks[i], run);
            i += run;
        }
        Interlocked.Add(ref _pendingFreeBlocks, -blocks.Count);
    }

    /// <summary>Allocates 1..<paramref name="want"/> consecutive physical blocks. Callers must not be inside a read epoch.</summary>
    internal int Allocate(int want, bool overwrite, out uint first)
    {
        int n = _allocator.Allocate(want, overwrite, out first);
        return n > 0 ? n : AllocateSlow(want, overwrite, out first);
    }

    private int AllocateSlow(int want, bool overwrite, out uint first)
    {
        var spin = new SpinWait();
        for (int attempt = 0; attempt < 200 && Volatile.Read(ref _pendingFreeBlocks) > 0; attempt++)
        {
            // Space is waiting to be reclaimed: make its frees durable and wait out readers.
            SyncPoint(Volatile.Read(ref _openSequence));
            lock (_freeLock)
            {
                AdvanceGrace();
            }
            int n = _allocator.Allocate(want, overwrite, out first);
            if (n > 0)
            {
                return n;
            }
            spin.SpinOnce();
        }
        first = 0;
        ThrowHelper.Throw(BlockError.NoSpace,
            $"pool '{Name}' is full ({CapacityBytes} bytes allocated); trim or delete volumes, or move replicas to another pool");
        return 0;
    }

    /// <summary>Gives back blocks that no map entry or record ever referenced (a failed or lost-race write).</summary>
    internal void ReleaseUnreferenced(uint first, int count) => _allocator.Free(first, count);

    internal void ReadData(uint physicalBlock, Span<byte> destination)
    {
        int n = _data.ReadAt((long)physicalBlock << PoolFormat.BlockShift, destination);
        if (n < destination.Length)
        {
            destination[n..].Clear(); // past end of file: fails its checksum like any other lost data
        }
    }

    /// <param name="uncached">Cold data: written past the page cache where the data file allows (see <see cref="IStorageFile.WriteUncachedAt"/>).
    /// Safe because every write goes to fresh blocks that no other writer holds: a block is never written through the
    /// cache and past it at once.</param>
    internal void WriteData(uint physicalBlock, ReadOnlySpan<byte> source, bool uncached = false)
    {
        long offset = (long)physicalBlock << PoolFormat.BlockShift;
        if (uncached)
        {
            _data.WriteUncachedAt(offset, source);
        }
        else
        {
            _data.WriteAt(offset, source);
        }
    }

    private void WaitForReaders()
    {
        var spin = new SpinWait();
        for (int i = 0; i < 10_000 && ReadersUnder(0) + ReadersUnder(1) != 0; i++)
        {
            spin.SpinOnce();
        }
    }
}

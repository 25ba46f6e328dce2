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

    // Reclamation: frees wait in the open batch, then (durable) in _durableFrees, then one grace period in _graceFrees.
    private readonly Lock _freeLock = new();
    private List<uint> _durableFrees = [];
    private List<uint> _graceFrees = [];
    private long _pendingFreeBlocks;

    // Two-phase read epochs: readers count themselves under the current parity, in a counter striped by processor
    // (one 64-byte cache line each) so concurrent readers on different cores do not fight over one line.
    private const int EpochStripes = 16;
    private const int EpochStride = 8;
    private readonly long[] _readers = new long[2 * EpochStripes * EpochStride];
    private int _parity;

    /// <summary>The open batch; only touch it while holding <see cref="BatchLock"/>.</summary>
    internal JournalBatch OpenBatch => _batch;

    internal void CountPendingFrees(int blocks) => Interlocked.Add(ref _pendingFreeBlocks, blocks);

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
            SyncPointLocked(Volatile.Read(ref _openSequence));
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
        if (_fault is not null)
        {
            ThrowHelper.Throw(BlockError.Io, $"pool '{Name}' failed to sync metadata earlier ({_fault.Message}); reopen it to recover");
        }
        JournalBatch batch;
        long sequence;
        lock (BatchLock)
        {
            batch = _batch;
            _batch = _spareBatch;
            sequence = _openSequence++;
        }
        WriteBatch(batch);
        _durableSequence = sequence;
        if (Volatile.Read(ref _pendingFreeBlocks) > 0)
        {
            lock (_freeLock)
            {
                _durableFrees.AddRange(batch.Frees);
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
            throw Fault(ex);
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
            throw Fault(ex);
        }
        try
        {
            _journal.Sync();
        }
        catch (IOException ex)
        {
            throw Fault(ex);
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
    private BlockDeviceException Fault(IOException ex)
    {
        _fault = ex;
        return new BlockDeviceException(BlockError.Io, $"pool '{Name}': metadata sync failed ({ex.Message}); the pool refuses writes until reopened", ex);
    }

    /// <summary>
    /// Writes all maps to a new checkpoint and starts an empty journal for its generation. Runs under the commit lock
    /// right after a sync point, so no batch is written meanwhile (flushers wait: stop-the-world for now, writers keep
    /// filling the open batch). The snapshot is fuzzy; records in the open batch go to the new journal and replay idempotently.
    /// </summary>
    private void Checkpoint()
    {
        ulong generation = _generation + 1;
        ThinVolume[] volumes;
        uint nextIndex;
        lock (_volumesLock)
        {
            volumes = [.. _volumes.Values];
            nextIndex = _nextVolumeIndex;
        }
        try
        {
            using (var tmp = _medium.Open(PoolFormat.CheckpointTempFile, create: true))
            {
                tmp.SetLength(0);
                CheckpointFile.Write(tmp, generation, _header.PoolId, nextIndex, volumes);
                _data.Sync(); // the snapshot may name blocks written after the last sync point
                tmp.Sync();
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
            throw Fault(ex);
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

    /// <summary>Returns blocks to the allocator, punching long runs out of the data file first (never after: the block could be reused).</summary>
    private void Release(List<uint> blocks)
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
            if (run >= _options.PunchHoleMinBlocks)
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

    internal void WriteData(uint physicalBlock, ReadOnlySpan<byte> source)
        => _data.WriteAt((long)physicalBlock << PoolFormat.BlockShift, source);

    private void WaitForReaders()
    {
        var spin = new SpinWait();
        for (int i = 0; i < 10_000 && ReadersUnder(0) + ReadersUnder(1) != 0; i++)
        {
            spin.SpinOnce();
        }
    }
}

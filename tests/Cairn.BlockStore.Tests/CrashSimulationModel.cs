using Cairn.Core;
using static Cairn.BlockStore.Tests.CrashSimulation;

namespace Cairn.BlockStore.Tests;

/// <summary>What the crash simulation knows the pool should hold: volumes (with every state each block may be in), snapshots (exact), the other volume.</summary>
internal sealed class World(long sizeBytes)
{
    public Dictionary<string, VolumeModel> Volumes { get; } = new(StringComparer.Ordinal) { ["v"] = new VolumeModel(sizeBytes, null) { Exists = true } };
    public List<SnapshotModel> Snapshots { get; } = [];
    /// <summary>Whether volume "w" exists; null while a create or delete of it was interrupted.</summary>
    public bool? OtherExists { get; set; } = false;
    public int NextId { get; set; }
    public Action<string>? Trace { get; init; }

    public IEnumerable<SnapshotModel> SnapshotsOf(string volume) => Snapshots.Where(s => s.Volume == volume && s.Exists == true);

    public void MarkAllDurable()
    {
        foreach (var v in Volumes.Values)
        {
            v.MarkAllDurable();
        }
    }

    /// <summary>After a crash: every volume and snapshot the pool shows must be one the run may have left, with content it may hold.</summary>
    public void Settle(BlockPool pool, string when)
    {
        foreach (var (name, model) in Volumes)
        {
            bool present = pool.TryGetVolume(name, out var volume);
            Check(model.Exists is null || model.Exists == present, $"{when}: volume '{name}' exists={present}, expected {model.Exists}");
            model.Exists = present;
            if (present)
            {
                model.Settle(name, volume!, when);
            }
        }
        SettleSnapshots(pool, when);
        SettleOther(pool, when);
    }

    /// <summary>Without a crash, after a failed write: each block must hold one of its states; later staged ones never happened.</summary>
    public void SettleLive(BlockPool pool)
    {
        foreach (var (name, model) in Volumes.Where(kv => kv.Value.Exists == true))
        {
            var whole = new byte[model.SizeBytes];
            Await(pool.Volume(name).ReadAsync(0, whole));
            model.DropUnreached(name, whole);
        }
    }

    /// <summary>Without a crash: volumes read exactly their latest state and snapshots exactly their content (or fail with EIO when errors are injected).</summary>
    public void VerifyLive(BlockPool pool, string when, bool tolerateIoErrors = false)
    {
        foreach (var (name, model) in Volumes.Where(kv => kv.Value.Exists == true))
        {
            var latest = model.Latest();
            VerifyBlocks(pool.Volume(name), latest, $"{when}: volume '{name}'", tolerateIoErrors);
        }
        foreach (var s in Snapshots.Where(s => s.Exists == true))
        {
            VerifyBlocks(pool.Snapshot(s.Volume, s.Name), s.Content, $"{when}: snapshot '{s.Volume}@{s.Name}'", tolerateIoErrors);
        }
    }

    /// <summary>Reads block by block, so one failing block does not hide the others.</summary>
    private static void VerifyBlocks(IBlockDevice device, byte[] expected, string what, bool tolerateIoErrors)
    {
        Check(device.SizeBytes == expected.Length, $"{what}: size {device.SizeBytes}, expected {expected.Length}");
        var buffer = new byte[VolumeModel.Block];
        for (long offset = 0; offset < expected.Length; offset += VolumeModel.Block)
        {
            int n = (int)Math.Min(VolumeModel.Block, expected.Length - offset);
            try
            {
                Await(device.ReadAsync(offset, buffer.AsMemory(0, n)));
            }
            catch (BlockDeviceException ex) when (tolerateIoErrors && ex.Error == BlockError.Io)
            {
                continue; // an injected error surfaced as an error: allowed
            }
            Check(buffer.AsSpan(0, n).SequenceEqual(expected.AsSpan((int)offset, n)), $"{what}: block {offset / VolumeModel.Block} reads wrong data");
        }
    }

    private void SettleSnapshots(BlockPool pool, string when)
    {
        foreach (var s in Snapshots)
        {
            bool present = Volumes[s.Volume].Exists == true && pool.TryGetSnapshot(s.Volume, s.Name, out _);
            Check(s.Exists is null || s.Exists == present || (s.Exists == true && Volumes[s.Volume].Exists == false),
                $"{when}: snapshot '{s.Volume}@{s.Name}' exists={present}, expected {s.Exists}");
            s.Exists = present;
            if (present)
            {
                VerifyBlocks(pool.Snapshot(s.Volume, s.Name), s.Content, $"{when}: snapshot '{s.Volume}@{s.Name}'", tolerateIoErrors: false);
            }
        }
        foreach (var (name, model) in Volumes.Where(kv => kv.Value.Exists == true))
        {
            var known = Snapshots.Where(s => s.Volume == name && s.Exists == true).Select(s => s.Name).Order(StringComparer.Ordinal);
            var listed = pool.ListSnapshots(name).Select(s => s.Name).Order(StringComparer.Ordinal);
            Check(known.SequenceEqual(listed), $"{when}: volume '{name}' lists snapshots [{string.Join(", ", listed)}], expected [{string.Join(", ", known)}]");
        }
    }

    private void SettleOther(BlockPool pool, string when)
    {
        bool hasOther = pool.TryGetVolume("w", out var w);
        Check(OtherExists is null || OtherExists == hasOther, $"{when}: volume 'w' exists={hasOther}, expected {OtherExists}");
        OtherExists = hasOther;
        if (hasOther)
        {
            Await(w!.ReadAsync(0, new byte[w.SizeBytes])); // must verify: no checksum error anywhere
        }
    }
}

/// <summary>A snapshot's exact content: it never changes once taken.</summary>
internal sealed class SnapshotModel(string volume, string name, byte[] content)
{
    public string Volume { get; } = volume;
    public string Name { get; } = name;
    public byte[] Content { get; } = content;
    public long SizeBytes => Content.Length;
    /// <summary>Null while a create or delete of it was interrupted.</summary>
    public bool? Exists { get; set; }
}

/// <summary>Per block: every state it may legitimately hold, in order, and the index of the last durable one.</summary>
internal sealed class VolumeModel
{
    public const int Block = 4096;
    private readonly List<List<byte[]>> _states = [];
    private readonly List<int> _durable = [];

    public VolumeModel(long sizeBytes, byte[]? content)
    {
        SizeBytes = sizeBytes;
        DurableSizeBytes = sizeBytes;
        for (int b = 0; b < BlocksFor(sizeBytes); b++)
        {
            var block = new byte[Block];
            content?.AsSpan(b * Block, (int)Math.Min(Block, content.Length - (long)b * Block)).CopyTo(block);
            _states.Add([block]);
            _durable.Add(0);
        }
    }

    /// <summary>Null while a clone creating it was interrupted; "v" always exists.</summary>
    public bool? Exists { get; set; }
    public long SizeBytes { get; set; }
    /// <summary>The size a crash cannot undo (a grow is durable when it returns).</summary>
    public long DurableSizeBytes { get; private set; }

    private static int BlocksFor(long sizeBytes) => (int)((sizeBytes + Block - 1) / Block);

    /// <summary>Records the states an operation will produce before it runs (a crash mid-operation may leave them).</summary>
    public List<int> Stage(long offset, byte[] data)
    {
        var touched = new List<int>();
        long end = offset + data.Length;
        for (long pos = offset; pos < end;)
        {
            int b = (int)(pos / Block);
            int inBlock = (int)(pos % Block);
            int n = (int)Math.Min(Block - inBlock, end - pos);
            var next = (byte[])_states[b][^1].Clone();
            data.AsSpan((int)(pos - offset), n).CopyTo(next.AsSpan(inBlock));
            _states[b].Add(next);
            touched.Add(b);
            pos += n;
        }
        return touched;
    }

    /// <summary>A revert: every block may become the snapshot's (zeros past the snapshot's end).</summary>
    public void StageRevert(byte[] content)
    {
        for (int b = 0; b < _states.Count; b++)
        {
            var next = new byte[Block];
            if ((long)b * Block < content.Length)
            {
                content.AsSpan(b * Block, (int)Math.Min(Block, content.Length - (long)b * Block)).CopyTo(next);
            }
            _states[b].Add(next);
        }
    }

    /// <summary>New blocks read as zeros; after a crash <see cref="Settle"/> accepts the old or the new size.</summary>
    public void Grow(long sizeBytes)
    {
        SizeBytes = sizeBytes;
        while (_states.Count < BlocksFor(sizeBytes))
        {
            _states.Add([new byte[Block]]);
            _durable.Add(0);
        }
    }

    public void MarkDurable(List<int> blocks)
    {
        foreach (int b in blocks)
        {
            _durable[b] = _states[b].Count - 1;
        }
    }

    public void MarkAllDurable()
    {
        for (int b = 0; b < _states.Count; b++)
        {
            _durable[b] = _states[b].Count - 1;
        }
        DurableSizeBytes = SizeBytes;
    }

    /// <summary>The volume's content if every operation so far completed.</summary>
    public byte[] Latest()
    {
        var all = new byte[SizeBytes];
        for (int b = 0; b < BlocksFor(SizeBytes); b++)
        {
            _states[b][^1].AsSpan(0, (int)Math.Min(Block, SizeBytes - (long)b * Block)).CopyTo(all.AsSpan(b * Block));
        }
        return all;
    }

    /// <summary>Checks what the volume reads after recovery, then makes that the only (durable) state of each block.</summary>
    public void Settle(string name, StoredVolume volume, string when)
    {
        long size = volume.SizeBytes;
        Check(size >= DurableSizeBytes && size <= SizeBytes, $"{when}: volume '{name}' is {size} bytes, expected {DurableSizeBytes}..{SizeBytes}");
        SizeBytes = size;
        int blocks = BlocksFor(size);
        _states.RemoveRange(blocks, _states.Count - blocks); // a grow that did not survive
        _durable.RemoveRange(blocks, _durable.Count - blocks);
        var whole = new byte[size];
        Await(volume.ReadAsync(0, whole));
        for (int b = 0; b < blocks; b++)
        {
            SettleBlock(name, b, whole.AsSpan(b * Block, (int)Math.Min(Block, size - (long)b * Block)), when);
        }
        DurableSizeBytes = size;
    }

    /// <summary>After a write failed part way (no crash): states staged after what each block holds never happened.</summary>
    public void DropUnreached(string name, byte[] whole)
    {
        for (int b = 0; b < BlocksFor(SizeBytes); b++)
        {
            var actual = whole.AsSpan(b * Block, (int)Math.Min(Block, SizeBytes - (long)b * Block));
            int match = Match(name, b, actual, "after an injected write error");
            _states[b].RemoveRange(match + 1, _states[b].Count - match - 1);
        }
    }

    private void SettleBlock(string name, int b, ReadOnlySpan<byte> actual, string when)
    {
        Match(name, b, actual, when);
        var states = _states[b];
        var settled = new byte[Block];
        actual.CopyTo(settled);
        states.Clear();
        states.Add(settled);
        _durable[b] = 0;
    }

    /// <summary>The newest state the block's content matches, which must not be older than its last durable one.</summary>
    private int Match(string name, int b, ReadOnlySpan<byte> actual, string when)
    {
        var states = _states[b];
        int match = -1;
        for (int k = states.Count - 1; k >= 0 && match < 0; k--)
        {
            if (states[k].AsSpan(0, actual.Length).SequenceEqual(actual))
            {
                match = k;
            }
        }
        if (match < _durable[b])
        {
            throw new InvalidOperationException(match < 0
                ? $"{when}: volume '{name}' block {b} holds bytes it never held (foreign or garbage data); {states.Count} known states"
                : $"{when}: volume '{name}' block {b} lost a durable write: reads state {match}, last durable state is {_durable[b]}");
        }
        return match;
    }
}

using System.Runtime.CompilerServices;
using Cairn.BlockStore.Format;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>What an in-place rewrite of one block (<see cref="BlockPool.RewriteBlockInPlace"/>) did.</summary>
public enum BlockRewriteOutcome
{
    /// <summary>The good content was written over the bad copy and made durable: the block reads correctly again.</summary>
    Rewritten,

    /// <summary>The block already read correctly: nothing was written.</summary>
    AlreadyGood,

    /// <summary>The data offered is not what the block's checksum expects (another copy's content): nothing was written.</summary>
    WrongData,

    /// <summary>The volume or snapshot holds no data block there (deleted, trimmed, never written): nothing was written.</summary>
    NotHeld,
}

/// <summary>An in-place rewrite's outcome and, for users and logs, why.</summary>
public sealed record BlockRewriteResult(BlockRewriteOutcome Outcome, string Detail);

/// <summary>
/// Repair of a bad block in place. Everywhere else the store redirects writes to fresh blocks, but a snapshot's map
/// never changes, so a snapshot's bad block can only be mended where it lies. That is safe because the rewrite can
/// only restore the exact bytes every map naming the block already expects: the data must match the CRC32C in the
/// map entry, and a physical block is shared only by maps at the same logical block with the same entry. No map
/// changes and no record is journaled; the bytes a crash could tear are identical, sector for sector, to what every
/// sharer expects, so a torn rewrite leaves the block at worst as bad as it was.
/// </summary>
public sealed partial class BlockPool
{
    /// <summary>
    /// Rewrites the physical block that a volume (<paramref name="snapshotName"/> null) or one of its snapshots holds
    /// at <paramref name="offsetBytes"/> with <paramref name="block"/>, in place, and fdatasyncs it: a repair from a
    /// good copy on another replica. Refuses (<see cref="BlockRewriteOutcome.WrongData"/>) data whose CRC32C differs
    /// from the map entry's, and does nothing when the block already reads correctly. A block shared with the live
    /// volume, other snapshots or clones is mended for all of them.
    /// </summary>
    /// <remarks>
    /// The map entry is looked up, and the block read and written, inside one read epoch entered before the lookup:
    /// a block a map unlinks after that (an overwrite of the volume, a snapshot deleted) goes back to the allocator only
    /// once this epoch drained (FORMAT.md, rule 4), so the rewrite can never land on a block already reused for other
    /// data. A client write racing the repair of a live block goes to a fresh block, as always: the rewrite cannot undo it.
    /// </remarks>
    /// <param name="block">The block's full 4 KiB: a volume's last, partial block is padded with zeros, as it is stored.</param>
    /// <exception cref="ArgumentException">The block is not 4 KiB, or the offset is negative or not a multiple of 4 KiB.</exception>
    public BlockRewriteResult RewriteBlockInPlace(string volumeId, string? snapshotName, long offsetBytes, ReadOnlySpan<byte> block)
    {
        ArgumentException.ThrowIfNullOrEmpty(volumeId);
        if (block.Length != PoolFormat.BlockBytes)
        {
            throw new ArgumentException($"an in-place rewrite takes one whole {PoolFormat.BlockBytes}-byte block, not {block.Length} bytes", nameof(block));
        }
        if (offsetBytes < 0 || offsetBytes % PoolFormat.BlockBytes != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offsetBytes), offsetBytes, $"an in-place rewrite starts at a multiple of {PoolFormat.BlockBytes} bytes");
        }
        ThrowIfUnusable();
        string device = snapshotName is null ? volumeId : $"{volumeId}@{snapshotName}";
        BlockRewriteResult result;
        int epoch = EnterEpoch();
        try
        {
            result = RewriteInEpoch(volumeId, snapshotName, device, offsetBytes, block);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            throw ThrowHelper.Translate(ex, $"in-place rewrite of {device} at byte {offsetBytes}");
        }
        finally
        {
            ExitEpoch(epoch);
        }
        if (result.Outcome == BlockRewriteOutcome.Rewritten)
        {
            SyncRewrite(); // outside the epoch: it makes durable what is already written, and need not hold up reclamation
        }
        return result;
    }

    /// <summary>The lookup, checks and write of <see cref="RewriteBlockInPlace"/>. Caller is inside a read epoch.</summary>
    [SkipLocalsInit]
    private BlockRewriteResult RewriteInEpoch(string volumeId, string? snapshotName, string device, long offsetBytes, ReadOnlySpan<byte> block)
    {
        long lba = offsetBytes >> PoolFormat.BlockShift;
        ulong entry;
        lock (_volumesLock) // a delete after this lock frees its blocks only after this epoch
        {
            if (!_volumes.TryGetValue(volumeId, out var volume))
            {
                return new BlockRewriteResult(BlockRewriteOutcome.NotHeld, $"volume '{volumeId}' does not exist in pool '{Name}'");
            }
            if (snapshotName is null)
            {
                entry = volume.Map.GetOrHole(lba);
            }
            else if (volume.Snapshots.Find(s => s.Name == snapshotName) is { } snapshot)
            {
                entry = snapshot.Map.GetOrHole(lba);
            }
            else
            {
                return new BlockRewriteResult(BlockRewriteOutcome.NotHeld, $"volume '{volumeId}' has no snapshot named '{snapshotName}' (deleted since?)");
            }
        }
        if (!ExtentMap.IsData(entry))
        {
            return new BlockRewriteResult(BlockRewriteOutcome.NotHeld, $"{device} holds no data block at byte {offsetBytes} (trimmed or overwritten since?)");
        }
        uint physical = ExtentMap.PhysicalOf(entry);
        if (Crc32C.Compute(block) != ExtentMap.CrcOf(entry))
        {
            return new BlockRewriteResult(BlockRewriteOutcome.WrongData,
                $"the data offered for {device} at byte {offsetBytes} does not match the block's checksum: it is not the content the block held");
        }
        Span<byte> current = stackalloc byte[PoolFormat.BlockBytes];
        if (ReadsCorrectly(physical, current, ExtentMap.CrcOf(entry)))
        {
            return new BlockRewriteResult(BlockRewriteOutcome.AlreadyGood, $"{device} at byte {offsetBytes} (physical block {physical}) reads correctly: nothing to rewrite");
        }
        WriteData(physical, block);
        return new BlockRewriteResult(BlockRewriteOutcome.Rewritten, $"{device} at byte {offsetBytes}: physical block {physical} rewritten in place");
    }

    private bool ReadsCorrectly(uint physical, Span<byte> scratch, uint crc)
    {
        try
        {
            ReadData(physical, scratch);
            return Crc32C.Compute(scratch) == crc;
        }
        catch (IOException)
        {
            return false; // a media error: rewriting the block may well be what mends it
        }
    }

    /// <summary>fdatasync of the data file after a rewrite, so the repair outlives a crash. A failed one faults the pool, as at a sync point.</summary>
    private void SyncRewrite()
    {
        try
        {
            _data.Sync();
        }
        catch (IOException ex)
        {
            throw EnterFault(ex);
        }
    }
}

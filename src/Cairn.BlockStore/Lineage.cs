namespace Cairn.BlockStore;

/// <summary>
/// Scans over maps that share pages. Two maps holding the same page array agree on all its entries, so every scan
/// skips such pages, and its cost follows what changed since a snapshot, not the volume's size.
/// </summary>
internal static class Lineage
{
    /// <summary>
    /// Physical blocks of <paramref name="map"/> that no neighbour holds at the same logical block: what dropping
    /// the map frees. Neighbours are the node's parent and children (frozen maps only: live maps must be forked first).
    /// </summary>
    public static void ForEachExclusive(ExtentMap map, IReadOnlyList<ExtentMap> neighbours, Action<long, ulong> visit)
    {
        long pages = map.PageCountNow;
        for (long p = 0; p < pages; p++)
        {
            var page = map.PageAt(p);
            if (page is null || SharedPage(page, p, neighbours))
            {
                continue;
            }
            long first = p << ExtentMap.PageShift;
            for (int i = 0; i < page.Length; i++)
            {
                ulong e = Volatile.Read(ref page[i]);
                if (ExtentMap.IsData(e) && !HeldByAny(first + i, e, neighbours))
                {
                    visit(first + i, e);
                }
            }
        }
    }

    /// <summary>Entries of <paramref name="map"/> that differ from <paramref name="parent"/> (holes included where the parent has an entry).</summary>
    public static void ForEachDifference(ExtentMap map, ExtentMap? parent, Action<long, ulong, ulong> visit)
    {
        long pages = map.PageCountNow;
        for (long p = 0; p < pages; p++)
        {
            var page = map.PageAt(p);
            var parentPage = parent?.PageAt(p);
            if (ReferenceEquals(page, parentPage))
            {
                continue; // same array (or both empty): nothing differs
            }
            long first = p << ExtentMap.PageShift;
            long end = Math.Min(first + ExtentMap.PageEntries, map.BlockCount);
            for (long b = first; b < end; b++)
            {
                ulong e = page is null ? 0 : Volatile.Read(ref page[b - first]);
                ulong before = parentPage is null || b >= parent!.BlockCount ? 0 : Volatile.Read(ref parentPage[b - first]);
                if (e != before)
                {
                    visit(b, e, before);
                }
            }
        }
    }

    private static bool SharedPage(ulong[] page, long pageIndex, IReadOnlyList<ExtentMap> neighbours)
    {
        foreach (var n in neighbours)
        {
            if (ReferenceEquals(n.PageAt(pageIndex), page))
            {
                return true;
            }
        }
        return false;
    }

    private static bool HeldByAny(long block, ulong entry, IReadOnlyList<ExtentMap> neighbours)
    {
        foreach (var n in neighbours)
        {
            if (ExtentMap.SameBlock(n.GetOrHole(block), entry))
            {
                return true;
            }
        }
        return false;
    }
}

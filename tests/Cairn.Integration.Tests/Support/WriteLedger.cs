using System.Buffers.Binary;

namespace Cairn.Integration.Tests.Support;

/// <summary>
/// Writes generation-stamped 4 KiB blocks through a <see cref="MiniNbdClient"/> and remembers, per block, the
/// generation made durable by the last completed FLUSH and every generation ever sent. After a crash,
/// <see cref="Verify"/> holds the server to the NBD promise: flushed data survives, nothing else appears.
/// </summary>
internal sealed class WriteLedger
{
    public const int BlockBytes = 4096;
    private const ulong Magic = 0x52474C4E52494143; // "CAIRNLGR"
    private readonly long _baseOffset;
    private readonly int _blocks;
    private readonly uint[] _durable;   // generation durable after the last completed flush (0 = none)
    private readonly uint[] _lastSent;  // highest generation whose write was sent (acknowledged or not)
    private readonly uint[] _pendingSinceFlush;
    private uint _generation;

    public WriteLedger(long baseOffset, int blocks)
    {
        _baseOffset = baseOffset;
        _blocks = blocks;
        _durable = new uint[blocks];
        _lastSent = new uint[blocks];
        _pendingSinceFlush = new uint[blocks];
    }

    public int FlushesCompleted { get; private set; }
    public long WritesAcknowledged { get; private set; }

    /// <summary>Random writes with a flush every <paramref name="flushEvery"/> writes, until the connection fails or is cancelled.</summary>
    public void Run(MiniNbdClient client, Random random, int flushEvery, CancellationToken cancel)
    {
        var buffer = new byte[BlockBytes];
        var pending = new List<int>();
        try
        {
            while (!cancel.IsCancellationRequested)
            {
                int block = random.Next(_blocks);
                uint generation = ++_generation;
                Fill(buffer, block, generation);
                _lastSent[block] = generation;
                client.Write(_baseOffset + (long)block * BlockBytes, buffer, fua: random.Next(16) == 0);
                WritesAcknowledged++;
                _pendingSinceFlush[block] = generation;
                pending.Add(block);
                if (pending.Count >= flushEvery)
                {
                    client.Flush();
                    foreach (var b in pending)
                    {
                        _durable[b] = Math.Max(_durable[b], _pendingSinceFlush[b]);
                    }
                    pending.Clear();
                    FlushesCompleted++;
                }
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Net.Sockets.SocketException or EndOfStreamException)
        {
            // The server died under us: exactly the situation being tested.
        }
    }

    /// <summary>Reads the whole region back; returns problems found (empty = the promise held).</summary>
    public List<string> Verify(MiniNbdClient client)
    {
        var problems = new List<string>();
        var chunk = new byte[256 * BlockBytes];
        for (int first = 0; first < _blocks; first += 256)
        {
            int count = Math.Min(256, _blocks - first);
            client.Read(_baseOffset + (long)first * BlockBytes, chunk.AsSpan(0, count * BlockBytes));
            for (int i = 0; i < count; i++)
            {
                var problem = Check(first + i, chunk.AsSpan(i * BlockBytes, BlockBytes));
                if (problem != null && problems.Count < 20)
                {
                    problems.Add(problem);
                }
            }
        }
        return problems;
    }

    /// <summary>After a verified restart, what survived is the new baseline.</summary>
    public void AcceptCurrent(MiniNbdClient client)
    {
        var block = new byte[BlockBytes];
        for (int b = 0; b < _blocks; b++)
        {
            if (_lastSent[b] == 0)
            {
                continue;
            }
            client.Read(_baseOffset + (long)b * BlockBytes, block);
            _durable[b] = BinaryPrimitives.ReadUInt64LittleEndian(block) == Magic ? (uint)BinaryPrimitives.ReadUInt64LittleEndian(block.AsSpan(16)) : 0;
            _lastSent[b] = _durable[b];
        }
    }

    private string? Check(int block, ReadOnlySpan<byte> data)
    {
        if (data.IndexOfAnyExcept((byte)0) < 0)
        {
            return _durable[block] == 0 ? null : $"block {block}: reads zeros but generation {_durable[block]} was flushed";
        }
        if (BinaryPrimitives.ReadUInt64LittleEndian(data) != Magic || (int)BinaryPrimitives.ReadUInt64LittleEndian(data[8..]) != block)
        {
            return $"block {block}: holds bytes that were never written to it";
        }
        var generation = (uint)BinaryPrimitives.ReadUInt64LittleEndian(data[16..]);
        Span<byte> expected = stackalloc byte[BlockBytes];
        Fill(expected, block, generation);
        if (!expected.SequenceEqual(data))
        {
            return $"block {block}: generation {generation} is torn or corrupt";
        }
        if (generation < _durable[block])
        {
            return $"block {block}: generation {generation} is older than flushed generation {_durable[block]}";
        }
        if (generation > _lastSent[block])
        {
            return $"block {block}: generation {generation} was never sent";
        }
        return null;
    }

    private static void Fill(Span<byte> buffer, int block, uint generation)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(buffer, Magic);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer[8..], (ulong)block);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer[16..], generation);
        ulong x = ((ulong)block << 32) ^ generation ^ 0x9E3779B97F4A7C15;
        for (int i = 24; i + 8 <= buffer.Length; i += 8)
        {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BinaryPrimitives.WriteUInt64LittleEndian(buffer[i..], x);
        }
    }
}

using Cairn.Core;
using Cairn.Replication;

namespace Cairn.Simulation.Tests.Sim;

/// <summary>What a client asks of the volume.</summary>
internal enum OpKind
{
    Read,
    Write,
    Trim,
    WriteZeroes,
    Flush,
}

/// <summary>One client operation on one 4 KiB block; writes carry a version unique to the block.</summary>
internal sealed record ClientOp(OpKind Kind, int Block, long Version, bool Fua, int Client)
{
    public bool Mutates => Kind is OpKind.Write or OpKind.Trim or OpKind.WriteZeroes;

    public override string ToString() => Kind switch
    {
        OpKind.Flush => $"c{Client} flush",
        OpKind.Read => $"c{Client} read b{Block}",
        _ => $"c{Client} {Kind} b{Block} v{Version}{(Fua ? " fua" : "")}",
    };
}

internal sealed record ClientResult(bool Ok, bool NotOwnerAnswer, string? Error, byte[]? Data)
{
    public static ClientResult Fail(string error) => new(false, false, error, null);

    public static ClientResult NotOwner(string error) => new(false, true, error, null);
}

/// <summary>
/// The owner node's front end for the volume: the simulation's stand-in for the frontend that sits in front of
/// <see cref="ReplicatedVolume"/>. The lease rule (serve only while the node can prove its lease, acknowledge a
/// mutation only if it still can when the replicas answered) is the volume's own, through <see cref="IOwnerLease"/>
/// (<see cref="SimOptions.OwnerHonoursLease"/> leaves it out, to show what then goes wrong).
/// The moment it returns success is the acknowledgement the checker records.
/// </summary>
internal sealed class OwnerHost(SimCluster cluster, SimNode node, ReplicatedVolume volume)
{
    private readonly int _incarnation = node.Incarnation;

    public ReplicatedVolume Volume { get; } = volume;

    /// <summary>The volume refused to go on (another owner took over, or a drop's compare-and-swap failed).</summary>
    public bool Fenced { get; private set; }

    public async Task<ClientResult> ExecuteAsync(ClientOp op)
    {
        if (Fenced || node.Host != this)
        {
            return ClientResult.NotOwner($"{node.Name} no longer owns the volume");
        }
        long startedUs = cluster.Sim.NowUs;
        byte[]? data = null;
        try
        {
            data = await RunAsync(op);
        }
        catch (BlockDeviceException e)
        {
            Fenced |= e.Error == BlockError.Shutdown;
            return ClientResult.Fail($"{node.Name}: {e.Message}");
        }
        catch (TimeoutException e)
        {
            return ClientResult.Fail(e.Message); // a drop whose compare-and-swap got no answer: not acknowledged
        }
        if (node.Incarnation != _incarnation)
        {
            return ClientResult.Fail($"{node.Name} crashed");
        }
        cluster.OnAcknowledged(node.Name, op, startedUs);
        return new ClientResult(true, false, null, data);
    }

    private async Task<byte[]?> RunAsync(ClientOp op)
    {
        long offset = (long)op.Block * SimDisk.BlockBytes;
        var fua = op.Fua ? WriteFlags.ForceUnitAccess : WriteFlags.None;
        switch (op.Kind)
        {
            case OpKind.Read:
                byte[] buffer = new byte[SimDisk.BlockBytes];
                await Volume.ReadAsync(offset, buffer);
                return buffer;
            case OpKind.Write:
                await Volume.WriteAsync(offset, Payload.For(op.Block, op.Version), fua);
                return null;
            case OpKind.Trim:
                await Volume.TrimAsync(offset, SimDisk.BlockBytes, fua);
                return null;
            case OpKind.WriteZeroes:
                await Volume.WriteZeroesAsync(offset, SimDisk.BlockBytes, ZeroFlags.None, fua);
                return null;
            default:
                await Volume.FlushAsync();
                return null;
        }
    }
}

/// <summary>Block contents that name themselves: which block, which version, and a pattern that shows any tearing.</summary>
internal static class Payload
{
    private const ulong Magic = 0x4D49534E52494143; // "CAIRNSIM"

    public static byte[] For(int block, long version)
    {
        byte[] data = new byte[SimDisk.BlockBytes];
        BitConverter.TryWriteBytes(data.AsSpan(0), Magic);
        BitConverter.TryWriteBytes(data.AsSpan(8), block);
        BitConverter.TryWriteBytes(data.AsSpan(12), version);
        for (int i = 20; i < data.Length; i++)
        {
            data[i] = Pattern(block, version, i);
        }
        return data;
    }

    /// <summary>The version a block holds: 0 for zeros, -1 for anything that is not a whole payload of this block.</summary>
    public static long VersionOf(int block, ReadOnlySpan<byte> data)
    {
        if (!data.ContainsAnyExcept((byte)0))
        {
            return 0;
        }
        if (BitConverter.ToUInt64(data) != Magic || BitConverter.ToInt32(data[8..]) != block)
        {
            return -1;
        }
        long version = BitConverter.ToInt64(data[12..]);
        for (int i = 20; i < data.Length; i++)
        {
            if (data[i] != Pattern(block, version, i))
            {
                return -1;
            }
        }
        return version;
    }

    private static byte Pattern(int block, long version, int i) => (byte)((version * 131) + (block * 7) + (i * 31) + (i >> 8));
}

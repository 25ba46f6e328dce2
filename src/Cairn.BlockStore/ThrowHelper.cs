using System.Diagnostics.CodeAnalysis;
using Cairn.BlockStore.Storage;
using Cairn.Core;

namespace Cairn.BlockStore;

/// <summary>Throws kept out of hot methods, and the one place IO exceptions become <see cref="BlockError"/>s.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void Throw(BlockError error, string message) => throw new BlockDeviceException(error, message);

    public static bool IsNoSpace(IOException ex)
        => ex.HResult == Libc.ENOSPC || (ex.HResult & 0xFFFF) is 0x70 or 0x27; // ENOSPC, ERROR_DISK_FULL, ERROR_HANDLE_DISK_FULL

    /// <summary>Maps what the medium threw to the contract's errors; anything else (bugs, simulated crashes) passes through.</summary>
    public static Exception Translate(Exception ex, string what) => ex switch
    {
        BlockDeviceException => ex,
        ObjectDisposedException => new BlockDeviceException(BlockError.Shutdown, $"{what}: the pool was closed", ex),
        IOException io when IsNoSpace(io) => new BlockDeviceException(BlockError.NoSpace, $"{what}: the filesystem under the pool is full", ex),
        IOException => new BlockDeviceException(BlockError.Io, $"{what}: {ex.Message}", ex),
        _ => ex,
    };
}

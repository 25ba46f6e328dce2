namespace Cairn.Core;

/// <summary>Why a block operation failed; frontends map these to their wire codes (errno for NBD, sense for SCSI).</summary>
public enum BlockError
{
    /// <summary>The medium failed or data did not verify (checksum mismatch). EIO.</summary>
    Io,
    /// <summary>No space left to allocate. ENOSPC.</summary>
    NoSpace,
    /// <summary>Write to a read-only device. EPERM.</summary>
    ReadOnly,
    /// <summary>Range outside the device, or otherwise invalid arguments. EINVAL.</summary>
    InvalidArgument,
    /// <summary>The device cannot do this (for example a fast zero it cannot do fast). ENOTSUP.</summary>
    NotSupported,
    /// <summary>The device was closed or deleted under the caller. ESHUTDOWN.</summary>
    Shutdown,
}

public sealed class BlockDeviceException : Exception
{
    public BlockDeviceException(BlockError error, string message, Exception? inner = null)
        : base(message, inner) => Error = error;

    public BlockError Error { get; }
}

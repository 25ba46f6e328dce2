namespace Cairn.Frontends.Nbd;

/// <summary>Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md). All integers are big-endian.</summary>
internal static class NbdProtocol
{
    public const ulong NbdMagic = 0x4e42444d41474943; // "NBDMAGIC"
    public const ulong IHaveOpt = 0x49484156454F5054; // "IHAVEOPT"
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const int RequestHeaderBytes = 28;
    public const int SimpleReplyBytes = 16;
    public const int StructuredHeaderBytes = 20;
    /// <summary>Structured chunk header plus the 64-bit offset of OFFSET_DATA.</summary>
    public const int OffsetDataHeaderBytes = StructuredHeaderBytes + 8;
    /// <summary>Structured ERROR chunk with an empty message: header, errno, message length.</summary>
    public const int ErrorChunkBytes = StructuredHeaderBytes + 4 + 2;
    /// <summary>Reserved zeros after an NBD_OPT_EXPORT_NAME reply unless the client set NO_ZEROES.</summary>
    public const int ExportNameZeroPadBytes = 124;
    /// <summary>The protocol's limit on strings (export names, descriptions, queries).</summary>
    public const int MaxStringBytes = 4096;
}

[Flags]
internal enum HandshakeFlags : ushort
{
    FixedNewstyle = 1,
    NoZeroes = 2,
}

[Flags]
internal enum ClientFlags : uint
{
    FixedNewstyle = 1,
    NoZeroes = 2,
    Known = FixedNewstyle | NoZeroes,
}

internal enum NbdOption : uint
{
    ExportName = 1,
    Abort = 2,
    List = 3,
    PeekExport = 4,
    StartTls = 5,
    Info = 6,
    Go = 7,
    StructuredReply = 8,
    ListMetaContext = 9,
    SetMetaContext = 10,
    ExtendedHeaders = 11,
}

internal enum OptionReply : uint
{
    Ack = 1,
    Server = 2,
    Info = 3,
    MetaContext = 4,
    ErrUnsupported = 0x80000001,
    ErrPolicy = 0x80000002,
    ErrInvalid = 0x80000003,
    ErrPlatform = 0x80000004,
    ErrTlsRequired = 0x80000005,
    ErrUnknown = 0x80000006,
    ErrShutdown = 0x80000007,
    ErrBlockSizeRequired = 0x80000008,
    ErrTooBig = 0x80000009,
}

internal enum InfoType : ushort
{
    Export = 0,
    Name = 1,
    Description = 2,
    BlockSize = 3,
}

[Flags]
internal enum TransmissionFlags : ushort
{
    HasFlags = 1 << 0,
    ReadOnly = 1 << 1,
    SendFlush = 1 << 2,
    SendFua = 1 << 3,
    Rotational = 1 << 4,
    SendTrim = 1 << 5,
    SendWriteZeroes = 1 << 6,
    SendDf = 1 << 7,
    CanMultiConn = 1 << 8,
    SendResize = 1 << 9,
    SendCache = 1 << 10,
    SendFastZero = 1 << 11,
}

internal enum NbdCommand : ushort
{
    Read = 0,
    Write = 1,
    Disconnect = 2,
    Flush = 3,
    Trim = 4,
    Cache = 5,
    WriteZeroes = 6,
    BlockStatus = 7,
}

[Flags]
internal enum CommandFlags : ushort
{
    None = 0,
    Fua = 1 << 0,
    NoHole = 1 << 1,
    DontFragment = 1 << 2,
    RequestOne = 1 << 3,
    FastZero = 1 << 4,
}

internal enum ReplyChunkType : ushort
{
    None = 0,
    OffsetData = 1,
    OffsetHole = 2,
    BlockStatus = 5,
    Error = 0x8001,
    ErrorOffset = 0x8002,
}

/// <summary>errno values as the NBD protocol defines them (not the host's).</summary>
internal static class NbdErrno
{
    public const uint None = 0;
    public const uint Perm = 1;
    public const uint Io = 5;
    public const uint NoMem = 12;
    public const uint Invalid = 22;
    public const uint NoSpace = 28;
    public const uint Overflow = 75;
    public const uint NotSupported = 95;
    public const uint Shutdown = 108;

    public static uint From(Cairn.Core.BlockError error) => error switch
    {
        Cairn.Core.BlockError.Io => Io,
        Cairn.Core.BlockError.NoSpace => NoSpace,
        Cairn.Core.BlockError.ReadOnly => Perm,
        Cairn.Core.BlockError.InvalidArgument => Invalid,
        Cairn.Core.BlockError.NotSupported => NotSupported,
        Cairn.Core.BlockError.Shutdown => Shutdown,
        _ => Io,
    };

    /// <summary>Any failure that is not a <see cref="Cairn.Core.BlockDeviceException"/> is reported as EIO: the client learns the IO failed, the log says why.</summary>
    public static uint From(Exception exception) =>
        exception is Cairn.Core.BlockDeviceException bde ? From(bde.Error) : Io;
}

using System.Buffers.Binary;

namespace Cairn.Frontends.Iscsi.Scsi;

/// <summary>SCSI status codes (SAM-5).</summary>
internal static class ScsiStatus
{
    public const byte Good = 0x00;
    public const byte CheckCondition = 0x02;
    public const byte Busy = 0x08;
    public const byte ReservationConflict = 0x18;
    public const byte TaskSetFull = 0x28;
}

internal enum SenseKey : byte
{
    NoSense = 0x0,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    AbortedCommand = 0xB,
    Miscompare = 0xE,
}

/// <summary>A sense key with its additional sense code and qualifier, and optionally the INFORMATION field (SPC-4 §4.5).</summary>
internal readonly record struct SenseData(SenseKey Key, byte Asc, byte Ascq, ulong? Information = null)
{
    /// <summary>Bytes of fixed-format sense data as this target writes it.</summary>
    public const int FixedBytes = 18;
    public const int DescriptorHeaderBytes = 8;

    public static readonly SenseData None = new(SenseKey.NoSense, 0, 0);
    public static readonly SenseData InvalidOpcode = new(SenseKey.IllegalRequest, 0x20, 0x00);
    public static readonly SenseData LbaOutOfRange = new(SenseKey.IllegalRequest, 0x21, 0x00);
    public static readonly SenseData InvalidFieldInCdb = new(SenseKey.IllegalRequest, 0x24, 0x00);
    public static readonly SenseData LogicalUnitNotSupported = new(SenseKey.IllegalRequest, 0x25, 0x00);
    public static readonly SenseData InvalidFieldInParameterList = new(SenseKey.IllegalRequest, 0x26, 0x00);
    public static readonly SenseData InvalidReleaseOfPersistentReservation = new(SenseKey.IllegalRequest, 0x26, 0x04);
    public static readonly SenseData ParameterListLengthError = new(SenseKey.IllegalRequest, 0x1A, 0x00);
    public static readonly SenseData SavingParametersNotSupported = new(SenseKey.IllegalRequest, 0x39, 0x00);
    public static readonly SenseData WriteProtected = new(SenseKey.DataProtect, 0x27, 0x00);
    public static readonly SenseData SpaceAllocationFailed = new(SenseKey.DataProtect, 0x27, 0x07);
    public static readonly SenseData UnrecoveredReadError = new(SenseKey.MediumError, 0x11, 0x00);
    public static readonly SenseData WriteError = new(SenseKey.MediumError, 0x0C, 0x00);
    public static readonly SenseData LogicalUnitNotReady = new(SenseKey.NotReady, 0x04, 0x00);
    public static readonly SenseData InternalTargetFailure = new(SenseKey.HardwareError, 0x44, 0x00);

    public static SenseData Miscompare(ulong offset) => new(SenseKey.Miscompare, 0x1D, 0x00, offset);

    /// <summary>Fixed format (response code 0x70), what initiators expect unless they set D_SENSE.</summary>
    public int WriteFixed(Span<byte> destination)
    {
        destination[..FixedBytes].Clear();
        destination[0] = (byte)(0x70 | (Information.HasValue ? 0x80 : 0));
        destination[2] = (byte)Key;
        if (Information is { } info)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination[3..], (uint)Math.Min(info, uint.MaxValue));
        }
        destination[7] = FixedBytes - 8;
        destination[12] = Asc;
        destination[13] = Ascq;
        return FixedBytes;
    }

    /// <summary>Descriptor format (response code 0x72) without descriptors, for REQUEST SENSE with DESC set.</summary>
    public int WriteDescriptor(Span<byte> destination)
    {
        destination[..DescriptorHeaderBytes].Clear();
        destination[0] = 0x72;
        destination[1] = (byte)Key;
        destination[2] = Asc;
        destination[3] = Ascq;
        return DescriptorHeaderBytes;
    }
}

/// <summary>How a command ended: status, sense for CHECK CONDITION, and how many bytes the command meant to move.</summary>
/// <param name="TransferBytes">The SCSI transfer length (from the CDB and allocation length); the transport derives residuals from it.</param>
internal readonly record struct ScsiResult(byte Status, SenseData Sense, long TransferBytes)
{
    public static ScsiResult Good(long transferBytes = 0) => new(ScsiStatus.Good, SenseData.None, transferBytes);

    public static ScsiResult Check(SenseData sense) => new(ScsiStatus.CheckCondition, sense, 0);
}

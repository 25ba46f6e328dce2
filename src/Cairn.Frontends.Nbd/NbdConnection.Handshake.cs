using System.Buffers.Binary;
using System.Text;
using Cairn.Core;
using Microsoft.Extensions.Logging;

namespace Cairn.Frontends.Nbd;

/// <summary>Fixed newstyle option haggling: everything up to NBD_OPT_GO / NBD_OPT_EXPORT_NAME.</summary>
internal sealed partial class NbdConnection
{
    /// <summary>Option data above this is refused by closing: the largest legitimate option (names and queries of 4 KiB) is far smaller.</summary>
    private const int MaxOptionBytes = 64 * 1024;
    /// <summary>A client still haggling after this many options is treated as a denial of service.</summary>
    private const int MaxOptions = 1024;
    private const int OptionReplyHeaderBytes = 20;
    private const string BaseAllocation = "base:allocation";
    private const uint BaseAllocationContextId = 1;

    private enum OptionOutcome { Continue, Transmission, Close }

    private bool _noZeroes;
    private bool _structured;
    /// <summary>The export that NBD_OPT_SET_META_CONTEXT selected contexts for; they apply only if GO picks the same export.</summary>
    private string? _metaContextExport;
    private uint _baseAllocationId;
    private bool _readOnly;

    private async ValueTask<bool> HandshakeAsync()
    {
        BinaryPrimitives.WriteUInt64BigEndian(_send, NbdProtocol.NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(_send.AsSpan(8), NbdProtocol.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(_send.AsSpan(16), (ushort)(HandshakeFlags.FixedNewstyle | HandshakeFlags.NoZeroes));
        await SendAllAsync(_send.AsMemory(0, 18));

        if (!await ReceiveExactAsync(_recv.AsMemory(0, 4)))
        {
            return false;
        }
        var clientFlags = (ClientFlags)BinaryPrimitives.ReadUInt32BigEndian(_recv);
        if ((clientFlags & ~ClientFlags.Known) != 0 || (clientFlags & ClientFlags.FixedNewstyle) == 0)
        {
            // The spec requires closing on unknown client flags; non-fixed newstyle clients cannot haggle safely.
            _logger.LogWarning("NBD {Client} sent client flags 0x{Flags:x}; only FIXED_NEWSTYLE and NO_ZEROES are supported, closing", ClientDescription, (uint)clientFlags);
            return false;
        }
        _noZeroes = (clientFlags & ClientFlags.NoZeroes) != 0;

        for (int i = 0; i < MaxOptions; i++)
        {
            if (!await ReceiveExactAsync(_recv.AsMemory(0, 16)))
            {
                return false;
            }
            ulong magic = BinaryPrimitives.ReadUInt64BigEndian(_recv);
            uint option = BinaryPrimitives.ReadUInt32BigEndian(_recv.AsSpan(8));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(_recv.AsSpan(12));
            if (magic != NbdProtocol.IHaveOpt)
            {
                _logger.LogWarning("NBD {Client} sent an option with bad magic 0x{Magic:x}, closing", ClientDescription, magic);
                return false;
            }
            if (length > MaxOptionBytes)
            {
                _logger.LogWarning("NBD {Client} sent option {Option} with {Length} bytes of data (limit {Max}), closing", ClientDescription, option, length, MaxOptionBytes);
                return false;
            }
            if (!await ReceiveExactAsync(_recv.AsMemory(0, (int)length)))
            {
                return false;
            }
            switch (await HandleOptionAsync(option, (int)length))
            {
                case OptionOutcome.Transmission:
                    return true;
                case OptionOutcome.Close:
                    return false;
            }
        }
        _logger.LogWarning("NBD {Client} sent {Max} options without choosing an export, closing", ClientDescription, MaxOptions);
        return false;
    }

    private ValueTask<OptionOutcome> HandleOptionAsync(uint option, int length) => (NbdOption)option switch
    {
        NbdOption.ExportName => ExportNameAsync(length),
        NbdOption.Abort => AbortOptionAsync(),
        NbdOption.List => ListAsync(length),
        NbdOption.Info => InfoOrGoAsync(option, length, go: false),
        NbdOption.Go => InfoOrGoAsync(option, length, go: true),
        NbdOption.StructuredReply => StructuredReplyAsync(length),
        NbdOption.ListMetaContext => MetaContextAsync(option, length, set: false),
        NbdOption.SetMetaContext => MetaContextAsync(option, length, set: true),
        _ => ErrorAsync(option, OptionReply.ErrUnsupported, $"option {option} is not supported by this server"),
    };

    private async ValueTask<OptionOutcome> AbortOptionAsync()
    {
        try
        {
            await ReplyAsync((uint)NbdOption.Abort, OptionReply.Ack, 0);
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException)
        {
            // The client may close without reading the ACK; either way we are done.
        }
        return OptionOutcome.Close;
    }

    private async ValueTask<OptionOutcome> StructuredReplyAsync(int length)
    {
        if (length != 0)
        {
            return await ErrorAsync((uint)NbdOption.StructuredReply, OptionReply.ErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
        }
        _structured = true;
        await ReplyAsync((uint)NbdOption.StructuredReply, OptionReply.Ack, 0);
        return OptionOutcome.Continue;
    }

    private async ValueTask<OptionOutcome> ListAsync(int length)
    {
        const uint option = (uint)NbdOption.List;
        if (length != 0)
        {
            return await ErrorAsync(option, OptionReply.ErrInvalid, "NBD_OPT_LIST takes no data");
        }
        foreach (var export in _server.Catalog.ListExports())
        {
            var payload = _send.AsSpan(OptionReplyHeaderBytes);
            int nameBytes = WriteClipped(payload[4..], export.Name);
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)nameBytes);
            int descriptionBytes = WriteClipped(payload[(4 + nameBytes)..], export.Description);
            // The reply length covers the name length field, the name and the description that follows it.
            await ReplyAsync(option, OptionReply.Server, 4 + nameBytes + descriptionBytes);
        }
        await ReplyAsync(option, OptionReply.Ack, 0);
        return OptionOutcome.Continue;
    }

    private async ValueTask<OptionOutcome> ExportNameAsync(int length)
    {
        string requested = Encoding.UTF8.GetString(_recv, 0, length);
        var opened = OpenExport(requested);
        if (opened is null)
        {
            // NBD_OPT_EXPORT_NAME has no error reply: the spec says to close.
            _logger.LogWarning("NBD {Client} asked for unknown export '{Name}' with NBD_OPT_EXPORT_NAME, closing", ClientDescription, requested);
            return OptionOutcome.Close;
        }
        var (session, _) = opened.Value;
        AdoptSession(session);
        BinaryPrimitives.WriteUInt64BigEndian(_send, (ulong)session.Device.SizeBytes);
        BinaryPrimitives.WriteUInt16BigEndian(_send.AsSpan(8), (ushort)TransmissionFlagsFor());
        int total = 10;
        if (!_noZeroes)
        {
            _send.AsSpan(10, NbdProtocol.ExportNameZeroPadBytes).Clear();
            total += NbdProtocol.ExportNameZeroPadBytes;
        }
        await SendAllAsync(_send.AsMemory(0, total));
        return OptionOutcome.Transmission;
    }

    private async ValueTask<OptionOutcome> InfoOrGoAsync(uint option, int length, bool go)
    {
        if (!TryParseInfoRequest(length, out string requested, out var wanted))
        {
            return await ErrorAsync(option, OptionReply.ErrInvalid, "malformed NBD_OPT_INFO/GO data: name length, name, info count and info types must add up to the option length");
        }
        var opened = OpenExport(requested);
        if (opened is null)
        {
            return await ErrorAsync(option, OptionReply.ErrUnknown, $"no export named '{requested}'; NBD_OPT_LIST shows what this server exports");
        }
        var (session, description) = opened.Value;
        try
        {
            await SendInfoRepliesAsync(option, session, description, wanted);
            await ReplyAsync(option, OptionReply.Ack, 0);
        }
        catch
        {
            session.Dispose();
            throw;
        }
        if (!go)
        {
            session.Dispose();
            return OptionOutcome.Continue;
        }
        AdoptSession(session);
        return OptionOutcome.Transmission;
    }

    private readonly record struct InfoWanted(bool Name, bool Description);

    private bool TryParseInfoRequest(int length, out string name, out InfoWanted wanted)
    {
        name = "";
        wanted = default;
        var data = _recv.AsSpan(0, length);
        if (data.Length < 6)
        {
            return false;
        }
        uint nameBytes = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameBytes > (uint)(data.Length - 6))
        {
            return false;
        }
        int at = 4 + (int)nameBytes;
        int count = BinaryPrimitives.ReadUInt16BigEndian(data[at..]);
        at += 2;
        if (data.Length - at != count * 2)
        {
            return false;
        }
        bool wantName = false, wantDescription = false;
        for (int i = 0; i < count; i++)
        {
            var type = (InfoType)BinaryPrimitives.ReadUInt16BigEndian(data[(at + 2 * i)..]);
            wantName |= type == InfoType.Name;
            wantDescription |= type == InfoType.Description;
        }
        name = Encoding.UTF8.GetString(data.Slice(4, (int)nameBytes));
        wanted = new InfoWanted(wantName, wantDescription);
        return true;
    }

    private async ValueTask SendInfoRepliesAsync(uint option, ExportSession session, string description, InfoWanted wanted)
    {
        var device = session.Device;
        bool readOnly = _readOnly || device.IsReadOnly;
        var payload = _send.AsSpan(OptionReplyHeaderBytes);

        // NBD_INFO_EXPORT is mandatory and exactly 12 bytes: type, size, transmission flags.
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)InfoType.Export);
        BinaryPrimitives.WriteUInt64BigEndian(payload[2..], (ulong)device.SizeBytes);
        BinaryPrimitives.WriteUInt16BigEndian(payload[10..], (ushort)TransmissionFlagsFor(readOnly));
        await ReplyAsync(option, OptionReply.Info, 12);

        if (wanted.Name)
        {
            payload = _send.AsSpan(OptionReplyHeaderBytes);
            BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)InfoType.Name);
            int n = WriteClipped(payload[2..], session.ExportName);
            await ReplyAsync(option, OptionReply.Info, 2 + n);
        }
        if (wanted.Description && description.Length > 0)
        {
            payload = _send.AsSpan(OptionReplyHeaderBytes);
            BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)InfoType.Description);
            int n = WriteClipped(payload[2..], description);
            await ReplyAsync(option, OptionReply.Info, 2 + n);
        }

        // Always sent (min 1 needs no client cooperation) and exactly 14 bytes: type, minimum, preferred, maximum.
        payload = _send.AsSpan(OptionReplyHeaderBytes);
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)InfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(payload[2..], 1);
        BinaryPrimitives.WriteUInt32BigEndian(payload[6..], (uint)PreferredBlockSize(device));
        BinaryPrimitives.WriteUInt32BigEndian(payload[10..], (uint)_server.Options.MaxRequestBytes);
        await ReplyAsync(option, OptionReply.Info, 14);
    }

    /// <summary>The spec wants a power of two between 512 and the maximum; the device's own block size when it qualifies.</summary>
    private int PreferredBlockSize(IBlockDevice device)
    {
        int preferred = Math.Max(512, device.PreferredBlockSizeBytes);
        if (!int.IsPow2(preferred))
        {
            preferred = (int)Math.Min(1u << 30, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)preferred));
        }
        return Math.Min(preferred, _server.Options.MaxRequestBytes);
    }

    private async ValueTask<OptionOutcome> MetaContextAsync(uint option, int length, bool set)
    {
        if (!_structured)
        {
            return await ErrorAsync(option, OptionReply.ErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY before meta contexts");
        }
        if (!TryParseMetaContextRequest(length, set, out string exportName, out bool matched))
        {
            return await ErrorAsync(option, OptionReply.ErrInvalid, "malformed meta context data: export name, query count and queries must add up to the option length");
        }
        string? resolved = ResolveExportName(exportName);
        if (resolved is null)
        {
            return await ErrorAsync(option, OptionReply.ErrUnknown, $"no export named '{exportName}'");
        }
        if (matched)
        {
            var payload = _send.AsSpan(OptionReplyHeaderBytes);
            // LIST replies carry id 0 (reserved); SET replies carry the id BLOCK_STATUS will use.
            BinaryPrimitives.WriteUInt32BigEndian(payload, set ? BaseAllocationContextId : 0);
            int n = Encoding.UTF8.GetBytes(BaseAllocation, payload[4..]);
            await ReplyAsync(option, OptionReply.MetaContext, 4 + n);
        }
        if (set)
        {
            _metaContextExport = resolved;
            _baseAllocationId = matched ? BaseAllocationContextId : 0;
        }
        await ReplyAsync(option, OptionReply.Ack, 0);
        return OptionOutcome.Continue;
    }

    private bool TryParseMetaContextRequest(int length, bool set, out string exportName, out bool matched)
    {
        exportName = "";
        matched = false;
        var data = _recv.AsSpan(0, length);
        if (data.Length < 8)
        {
            return false;
        }
        uint nameBytes = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameBytes > (uint)(data.Length - 8))
        {
            return false;
        }
        exportName = Encoding.UTF8.GetString(data.Slice(4, (int)nameBytes));
        int at = 4 + (int)nameBytes;
        uint queries = BinaryPrimitives.ReadUInt32BigEndian(data[at..]);
        at += 4;
        // An empty LIST query means "everything you have".
        matched = !set && queries == 0;
        for (uint q = 0; q < queries; q++)
        {
            if (data.Length - at < 4)
            {
                return false;
            }
            uint queryBytes = BinaryPrimitives.ReadUInt32BigEndian(data[at..]);
            at += 4;
            if (queryBytes > (uint)(data.Length - at))
            {
                return false;
            }
            var query = data.Slice(at, (int)queryBytes);
            at += (int)queryBytes;
            matched |= query.SequenceEqual("base:allocation"u8) || (!set && query.SequenceEqual("base:"u8));
        }
        return at == data.Length;
    }

    private string? ResolveExportName(string requested)
    {
        string? name = requested.Length == 0 ? _server.Catalog.DefaultExportName : requested;
        if (name is null)
        {
            return null;
        }
        foreach (var export in _server.Catalog.ListExports())
        {
            if (string.Equals(export.Name, name, StringComparison.Ordinal))
            {
                return name;
            }
        }
        return null;
    }

    /// <summary>Opens the export (empty name = default) and finds its description and read-only flag from the catalog.</summary>
    private (ExportSession Session, string Description)? OpenExport(string requested)
    {
        string? name = requested.Length == 0 ? _server.Catalog.DefaultExportName : requested;
        if (name is null)
        {
            return null;
        }
        string description = "";
        _readOnly = false;
        foreach (var export in _server.Catalog.ListExports())
        {
            if (string.Equals(export.Name, name, StringComparison.Ordinal))
            {
                description = export.Description;
                _readOnly = export.IsReadOnly;
            }
        }
        var session = _server.Catalog.TryOpen(name, ClientDescription);
        return session is null ? null : (session, description);
    }

    private void AdoptSession(ExportSession session)
    {
        _session = session;
        _device = session.Device;
        _readOnly |= session.Device.IsReadOnly;
        if (!string.Equals(_metaContextExport, session.ExportName, StringComparison.Ordinal))
        {
            _baseAllocationId = 0;
        }
        _logger.LogInformation("NBD {Client} attached to export '{Export}' (structured replies {Structured}, base:allocation {Meta})",
            ClientDescription, session.ExportName, _structured, _baseAllocationId != 0);
    }

    private TransmissionFlags TransmissionFlagsFor() => TransmissionFlagsFor(_readOnly);

    private TransmissionFlags TransmissionFlagsFor(bool readOnly)
    {
        // CAN_MULTI_CONN is honest: the device's FlushAsync covers writes completed on every connection.
        var flags = TransmissionFlags.HasFlags | TransmissionFlags.SendFlush | TransmissionFlags.SendFua
            | TransmissionFlags.SendCache | TransmissionFlags.CanMultiConn;
        if (readOnly)
        {
            flags |= TransmissionFlags.ReadOnly;
        }
        else
        {
            flags |= TransmissionFlags.SendTrim | TransmissionFlags.SendWriteZeroes | TransmissionFlags.SendFastZero;
        }
        if (_structured)
        {
            // DF only means something with structured replies; we always send reads in one chunk anyway.
            flags |= TransmissionFlags.SendDf;
        }
        return flags;
    }

    /// <summary>Writes UTF-8 clipped to the protocol's 4 KiB string limit; returns the byte count.</summary>
    private static int WriteClipped(Span<byte> destination, string text)
    {
        var limit = destination[..Math.Min(destination.Length, NbdProtocol.MaxStringBytes)];
        Encoding.UTF8.GetEncoder().Convert(text, limit, flush: true, out _, out int written, out _);
        return written;
    }

    private async ValueTask<OptionOutcome> ErrorAsync(uint option, OptionReply error, string message)
    {
        int n = WriteClipped(_send.AsSpan(OptionReplyHeaderBytes), message);
        await ReplyAsync(option, error, n);
        return OptionOutcome.Continue;
    }

    /// <summary>Sends one option reply whose payload the caller already placed after the 20-byte header in <see cref="_send"/>.</summary>
    private ValueTask ReplyAsync(uint option, OptionReply type, int payloadBytes)
    {
        var header = _send.AsSpan();
        BinaryPrimitives.WriteUInt64BigEndian(header, NbdProtocol.OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(header[8..], option);
        BinaryPrimitives.WriteUInt32BigEndian(header[12..], (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(header[16..], (uint)payloadBytes);
        return SendAllAsync(_send.AsMemory(0, OptionReplyHeaderBytes + payloadBytes));
    }
}

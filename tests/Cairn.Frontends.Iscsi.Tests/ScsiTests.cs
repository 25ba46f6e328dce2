using System.Buffers.Binary;
using Cairn.Core;
using Cairn.Frontends.Iscsi.Scsi;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>The SCSI logical unit alone: CDBs in, status, sense and data out, against a RAM device.</summary>
public sealed class ScsiTests
{
    private const int Block = ScsiLogicalUnit.BlockBytes;
    private readonly RamBlockDevice _disk = new(1 << 20);
    private readonly ScsiLogicalUnit _unit;

    public ScsiTests() => _unit = new ScsiLogicalUnit(_disk, "vol1", "iqn.2026-11.io.cairn:vol1");

    private async Task<(ScsiResult Result, byte[] Data)> Run(byte[] cdb, int dataInBytes = 0, byte[]? dataOut = null, bool lunExists = true)
    {
        var dataIn = new byte[dataInBytes];
        var result = await _unit.ExecuteAsync(cdb, lunExists, dataOut ?? [], dataIn, CancellationToken.None);
        return (result, dataIn);
    }

    private static byte[] Cdb10(byte opcode, uint lba, ushort blocks, byte flags = 0)
    {
        var cdb = new byte[16];
        cdb[0] = opcode;
        cdb[1] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), blocks);
        return cdb;
    }

    private static byte[] Cdb16(byte opcode, ulong lba, uint blocks, byte flags = 0)
    {
        var cdb = new byte[16];
        cdb[0] = opcode;
        cdb[1] = flags;
        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), blocks);
        return cdb;
    }

    [Fact]
    public void Block_ranges_parse_for_every_cdb_size()
    {
        Assert.True(BlockRange.TryParse([0x08, 0x1F, 0xFF, 0xFF, 0, 0], out var r6));
        Assert.Equal(new BlockRange(0x1FFFFF, 256, false, 0), r6); // 21-bit LBA, 0 blocks means 256
        Assert.True(BlockRange.TryParse(Cdb10(0x2A, 7, 3, 0x08), out var r10));
        Assert.Equal(new BlockRange(7, 3, true, 0), r10);
        var cdb12 = new byte[12];
        cdb12[0] = 0xA8;
        BinaryPrimitives.WriteUInt32BigEndian(cdb12.AsSpan(2), 9);
        BinaryPrimitives.WriteUInt32BigEndian(cdb12.AsSpan(6), 70000);
        Assert.True(BlockRange.TryParse(cdb12, out var r12));
        Assert.Equal(new BlockRange(9, 70000, false, 0), r12);
        Assert.True(BlockRange.TryParse(Cdb16(0x88, 1UL << 40, 5, 0x20), out var r16));
        Assert.Equal(new BlockRange(1UL << 40, 5, false, 1), r16);
        Assert.False(BlockRange.TryParse([0x00, 0, 0, 0, 0, 0], out _));
        Assert.True(new BlockRange(10, 0, false, 0).FitsIn(10));
        Assert.False(new BlockRange(9, 2, false, 0).FitsIn(10));
        Assert.False(new BlockRange(ulong.MaxValue, 2, false, 0).FitsIn(10));
    }

    [Fact]
    public void Fixed_sense_data_has_key_asc_and_ascq_where_initiators_look()
    {
        var sense = new byte[SenseData.FixedBytes];
        Assert.Equal(18, SenseData.LbaOutOfRange.WriteFixed(sense));
        Assert.Equal((0x70, 0x05, 10, 0x21, 0x00), (sense[0], sense[2], sense[7], sense[12], sense[13]));
        SenseData.Miscompare(1234).WriteFixed(sense);
        Assert.Equal(0xF0, sense[0]); // VALID: INFORMATION holds the miscompare offset
        Assert.Equal(1234u, BinaryPrimitives.ReadUInt32BigEndian(sense.AsSpan(3)));
        Assert.Equal(8, SenseData.InvalidOpcode.WriteDescriptor(sense));
        Assert.Equal((0x72, 0x05, 0x20), (sense[0], sense[1], sense[2]));
    }

    [Fact]
    public async Task Unknown_opcodes_get_invalid_command_operation_code()
    {
        var (result, _) = await Run([0xC5, 0, 0, 0, 0, 0]);
        Assert.Equal(ScsiStatus.CheckCondition, result.Status);
        Assert.Equal(SenseData.InvalidOpcode, result.Sense);
    }

    [Fact]
    public async Task Write_then_read_round_trips_and_fua_reaches_the_device()
    {
        var data = new byte[2 * Block];
        new Random(1).NextBytes(data);
        var (write, _) = await Run(Cdb10(0x2A, 10, 2, flags: 0x08), dataOut: data);
        Assert.Equal(ScsiResult.Good(2 * Block), write);
        Assert.Equal(1, _disk.FuaWrites);
        var (read, back) = await Run(Cdb16(0x88, 10, 2), 2 * Block);
        Assert.Equal(ScsiResult.Good(2 * Block), read);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task Out_of_range_lba_is_refused_without_touching_the_device()
    {
        ulong blocks = (ulong)_disk.SizeBytes / Block;
        var (result, _) = await Run(Cdb10(0x28, (uint)blocks - 1, 2), 2 * Block);
        Assert.Equal(SenseData.LbaOutOfRange, result.Sense);
        var (overflow, _) = await Run(Cdb16(0x8A, ulong.MaxValue, 1), dataOut: new byte[Block]);
        Assert.Equal(SenseData.LbaOutOfRange, overflow.Sense);
    }

    [Fact]
    public async Task Device_errors_map_to_sense()
    {
        _disk.Fault = (op, _) => op == "read" ? BlockError.Io : BlockError.NoSpace;
        Assert.Equal(SenseData.UnrecoveredReadError, (await Run(Cdb10(0x28, 0, 1), Block)).Result.Sense);
        Assert.Equal(SenseData.SpaceAllocationFailed, (await Run(Cdb10(0x2A, 0, 1), dataOut: new byte[Block])).Result.Sense);
    }

    [Fact]
    public async Task Synchronize_cache_flushes()
    {
        Assert.Equal(ScsiResult.Good(), (await Run(Cdb10(0x35, 0, 0))).Result);
        Assert.Equal(ScsiResult.Good(), (await Run(Cdb16(0x91, 0, 8))).Result);
        Assert.Equal(2, _disk.Flushes);
    }

    [Fact]
    public async Task Unmap_trims_every_descriptor_after_checking_them_all()
    {
        _disk.Data.Fill(0x11);
        var list = new byte[8 + 32];
        BinaryPrimitives.WriteUInt16BigEndian(list, 6 + 32);
        BinaryPrimitives.WriteUInt16BigEndian(list.AsSpan(2), 32);
        BinaryPrimitives.WriteUInt64BigEndian(list.AsSpan(8), 8);
        BinaryPrimitives.WriteUInt32BigEndian(list.AsSpan(16), 8);
        BinaryPrimitives.WriteUInt64BigEndian(list.AsSpan(24), 2048); // past the end of a 1 MiB disk
        BinaryPrimitives.WriteUInt32BigEndian(list.AsSpan(32), 1);
        var cdb = new byte[10];
        cdb[0] = 0x42;
        BinaryPrimitives.WriteUInt16BigEndian(cdb.AsSpan(7), (ushort)list.Length);
        Assert.Equal(SenseData.LbaOutOfRange, (await Run(cdb, dataOut: list)).Result.Sense);
        Assert.Equal(0x11, _disk.Data[8 * Block]); // nothing trimmed

        BinaryPrimitives.WriteUInt64BigEndian(list.AsSpan(24), 100);
        Assert.Equal(ScsiResult.Good(), (await Run(cdb, dataOut: list)).Result);
        Assert.Equal(AllocationState.Hole, _disk.PageState(8 * Block));
        Assert.True(_disk.Data.Slice(8 * Block, 8 * Block).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public async Task Write_same_writes_patterns_zeroes_or_unmaps()
    {
        var pattern = new byte[Block];
        pattern.AsSpan().Fill(0x77);
        Assert.Equal(ScsiStatus.Good, (await Run(Cdb10(0x41, 16, 16), dataOut: pattern)).Result.Status);
        Assert.True(_disk.Data.Slice(16 * Block, 16 * Block).IndexOfAnyExcept((byte)0x77) < 0);

        Assert.Equal(ScsiStatus.Good, (await Run(Cdb16(0x93, 16, 8, flags: 0x08), dataOut: new byte[Block])).Result.Status);
        Assert.Equal(AllocationState.Hole, _disk.PageState(16 * Block)); // UNMAP with zero data trims
        Assert.Equal(ScsiStatus.Good, (await Run(Cdb16(0x93, 24, 8), dataOut: new byte[Block])).Result.Status);
        Assert.True(_disk.Data.Slice(16 * Block, 16 * Block).IndexOfAnyExcept((byte)0) < 0);

        Assert.Equal(SenseData.InvalidFieldInCdb, (await Run(Cdb10(0x41, 0, 0), dataOut: pattern)).Result.Sense); // WSNZ
        Assert.Equal(SenseData.InvalidFieldInCdb, (await Run(Cdb10(0x41, 0, 1), dataOut: new byte[2 * Block])).Result.Sense); // one block of data, exactly
    }

    [Fact]
    public async Task Verify_with_byte_check_reports_the_first_miscompare()
    {
        _disk.Data[..(2 * Block)].Fill(0x33);
        var expected = new byte[2 * Block];
        expected.AsSpan().Fill(0x33);
        Assert.Equal(ScsiStatus.Good, (await Run(Cdb10(0x2F, 0, 2, flags: 0x02), dataOut: expected)).Result.Status);
        expected[700] = 0;
        var (result, _) = await Run(Cdb16(0x8F, 0, 2, flags: 0x02), dataOut: expected);
        Assert.Equal(SenseData.Miscompare(700), result.Sense);
    }

    [Fact]
    public async Task Read_capacity_reports_blocks_and_block_limits_a_4_KiB_granularity()
    {
        var (rc10, data10) = await Run([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
        Assert.Equal(ScsiResult.Good(8), rc10);
        Assert.Equal((uint)(_disk.SizeBytes / Block) - 1, BinaryPrimitives.ReadUInt32BigEndian(data10));
        Assert.Equal((uint)Block, BinaryPrimitives.ReadUInt32BigEndian(data10.AsSpan(4)));

        var cdb = new byte[16];
        cdb[0] = 0x9E;
        cdb[1] = 0x10;
        cdb[13] = 32;
        var (rc16, data16) = await Run(cdb, 32);
        Assert.Equal(ScsiResult.Good(32), rc16);
        Assert.Equal((ulong)(_disk.SizeBytes / Block) - 1, BinaryPrimitives.ReadUInt64BigEndian(data16));
        Assert.Equal(0, data16[13] & 0x0F); // physical = logical blocks; 4 KiB is the optimal granularity below
        Assert.Equal(0xC0, data16[14]); // LBPME, LBPRZ

        var (limits, page) = await Run([0x12, 1, 0xB0, 0, 255, 0], 255);
        Assert.Equal(ScsiStatus.Good, limits.Status);
        Assert.Equal(8, BinaryPrimitives.ReadUInt16BigEndian(page.AsSpan(6))); // optimal transfer length granularity
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32BigEndian(page.AsSpan(28))); // optimal unmap granularity
    }

    [Fact]
    public async Task Inquiry_pages_are_complete_and_identifiers_stable()
    {
        var (std, data) = await Run([0x12, 0, 0, 0, 255, 0], 255);
        Assert.Equal(ScsiResult.Good(66), std);
        Assert.Equal("CAIRN   ", System.Text.Encoding.ASCII.GetString(data, 8, 8));

        var (_, pages) = await Run([0x12, 1, 0x00, 0, 255, 0], 255);
        Assert.Equal(new byte[] { 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2 }, pages.AsSpan(4, pages[3]).ToArray());
        foreach (byte page in new byte[] { 0x80, 0x83, 0xB0, 0xB1, 0xB2 })
        {
            var (r, body) = await Run([0x12, 1, page, 0, 255, 0], 255);
            Assert.Equal(ScsiStatus.Good, r.Status);
            Assert.Equal(page, body[1]);
        }

        var (_, id) = await Run([0x12, 1, 0x83, 0, 255, 0], 255);
        Assert.Equal(0x01, id[4] & 0x0F); // binary code set
        Assert.Equal(0x03, id[5] & 0x0F); // NAA designator
        Assert.Equal(0x3, id[8] >> 4); // NAA 3: locally assigned
        var again = new ScsiLogicalUnit(new RamBlockDevice(4096), "vol1", "other");
        var id2 = new byte[255];
        await again.ExecuteAsync(new byte[] { 0x12, 1, 0x83, 0, 255, 0 }, true, default, id2, CancellationToken.None);
        Assert.Equal(id.AsSpan(8, 8).ToArray(), id2.AsSpan(8, 8).ToArray()); // same export name, same NAA
        var other = new ScsiLogicalUnit(new RamBlockDevice(4096), "vol2", "other");
        await other.ExecuteAsync(new byte[] { 0x12, 1, 0x83, 0, 255, 0 }, true, default, id2, CancellationToken.None);
        Assert.NotEqual(id.AsSpan(8, 8).ToArray(), id2.AsSpan(8, 8).ToArray());

        Assert.Equal(SenseData.InvalidFieldInCdb, (await Run([0x12, 1, 0x99, 0, 255, 0], 255)).Result.Sense);
        Assert.Equal(SenseData.InvalidFieldInCdb, (await Run([0x12, 0, 0x80, 0, 255, 0], 255)).Result.Sense);
    }

    [Fact]
    public async Task Allocation_length_cuts_the_transfer()
    {
        var (r, _) = await Run([0x12, 0, 0, 0, 10, 0], 255);
        Assert.Equal(ScsiResult.Good(10), r);
    }

    [Fact]
    public async Task Missing_luns_answer_inquiry_with_no_unit_and_refuse_io()
    {
        var (inq, data) = await Run([0x12, 0, 0, 0, 36, 0], 36, lunExists: false);
        Assert.Equal(ScsiStatus.Good, inq.Status);
        Assert.Equal(0x7F, data[0]);
        Assert.Equal(SenseData.LogicalUnitNotSupported, (await Run(Cdb10(0x28, 0, 1), Block, lunExists: false)).Result.Sense);
    }

    [Fact]
    public async Task Report_luns_lists_lun_0()
    {
        var cdb = new byte[12];
        cdb[0] = 0xA0;
        cdb[9] = 16;
        var (r, data) = await Run(cdb, 16);
        Assert.Equal(ScsiResult.Good(16), r);
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32BigEndian(data));
        Assert.True(data.AsSpan(8, 8).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public async Task Mode_sense_reports_write_cache_and_fua_support()
    {
        var (r, data) = await Run([0x1A, 0x08, 0x08, 0, 255, 0], 255); // DBD, caching page
        Assert.Equal(ScsiStatus.Good, r.Status);
        Assert.Equal(0x10, data[2] & 0x10); // DPOFUA
        Assert.Equal(0, data[3]); // no block descriptors
        Assert.Equal(0x08, data[4]);
        Assert.Equal(0x04, data[6] & 0x04); // WCE
        Assert.Equal(data[0] + 1, (int)r.TransferBytes);

        var cdb10 = new byte[10];
        cdb10[0] = 0x5A;
        cdb10[2] = 0x3F;
        cdb10[8] = 255;
        var (all, allData) = await Run(cdb10, 255);
        Assert.Equal(ScsiStatus.Good, all.Status);
        Assert.Equal(8, allData[7]); // one block descriptor
        Assert.Equal(BinaryPrimitives.ReadUInt16BigEndian(allData) + 2, (int)all.TransferBytes);

        Assert.Equal(SenseData.SavingParametersNotSupported, (await Run([0x1A, 0, 0xC8, 0, 255, 0], 255)).Result.Sense);
    }

    [Fact]
    public async Task Read_only_volumes_refuse_writes_with_write_protected()
    {
        var unit = new ScsiLogicalUnit(new RamBlockDevice(1 << 20, readOnly: true), "ro", "t");
        var result = await unit.ExecuteAsync(Cdb10(0x2A, 0, 1), true, new byte[Block], default, CancellationToken.None);
        Assert.Equal(SenseData.WriteProtected, result.Sense);
    }

    [Fact]
    public async Task Get_lba_status_reports_mapped_and_deallocated_runs()
    {
        _disk.Data.Slice(8 * Block, 8 * Block).Fill(1); // only writes mark pages allocated
        await _unit.ExecuteAsync(Cdb10(0x2A, 8, 8), true, new byte[8 * Block], default, CancellationToken.None);
        var cdb = new byte[16];
        cdb[0] = 0x9E;
        cdb[1] = 0x12;
        BinaryPrimitives.WriteUInt32BigEndian(cdb.AsSpan(10), 8 + (16 * 4));
        var (r, data) = await Run(cdb, 8 + (16 * 4));
        Assert.Equal(ScsiStatus.Good, r.Status);
        Assert.Equal((uint)(4 + (3 * 16)), BinaryPrimitives.ReadUInt32BigEndian(data)); // three runs: hole, data, hole
        (ulong Lba, uint Blocks, byte Status) Run3(int i) => (
            BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(8 + (16 * i))),
            BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(16 + (16 * i))),
            data[20 + (16 * i)]);
        Assert.Equal((0UL, 8u, (byte)1), Run3(0));
        Assert.Equal((8UL, 8u, (byte)0), Run3(1));
        Assert.Equal((16UL, (uint)(_disk.SizeBytes / Block) - 16, (byte)1), Run3(2));

        BinaryPrimitives.WriteUInt64BigEndian(cdb.AsSpan(2), (ulong)(_disk.SizeBytes / Block));
        Assert.Equal(SenseData.LbaOutOfRange, (await Run(cdb, 72)).Result.Sense);
    }
}

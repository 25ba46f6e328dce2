using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>libiscsi's conformance suite against the in-process target over a RAM LUN (see <see cref="IscsiConformance"/>).</summary>
public sealed class ConformanceTests
{
    [Fact]
    public async Task Iscsi_test_cu_passes_every_test_tgt_passes()
    {
        // Only the suite's two initiator names may log in.
        await using var h = await ServerHarness.StartAsync(diskAccess: new IscsiAccess(IscsiConformance.TestInitiators));
        await IscsiConformance.RunAndCheckAsync(h.Url(), "ram");
    }
}

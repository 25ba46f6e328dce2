using Cairn.Core;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>
/// Allow lists and CHAP with libiscsi's own tools: CHAP credentials ride in the URL (iscsi://user%secret@host/...),
/// the mutual secret in LIBISCSI_CHAP_TARGET_USERNAME / LIBISCSI_CHAP_TARGET_PASSWORD.
/// </summary>
public sealed class AccessControlTests
{
    private const string Allowed = "iqn.2026-11.test:allowed";
    private const string Stranger = "iqn.2026-11.test:stranger";
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private static readonly ChapCredentials Chap = new("alice", "initiator-sec");
    private static readonly ChapCredentials Mutual = new("cairn", "target-secret1");

    private static Task<ExternalTool.Result> Inquiry(ServerHarness h, string initiator, string? credentials = null, ChapCredentials? targetProof = null)
    {
        string user = credentials is null ? "" : credentials + "@";
        var env = targetProof is null ? new Dictionary<string, string>()
            : new Dictionary<string, string> { ["LIBISCSI_CHAP_TARGET_USERNAME"] = targetProof.User, ["LIBISCSI_CHAP_TARGET_PASSWORD"] = targetProof.Secret };
        return ExternalTool.RunAsync("iscsi-inq", "libiscsi-bin", Deadline, env, "-i", initiator, $"iscsi://{user}127.0.0.1:{h.Port}/{ServerHarness.Prefix}disk/0");
    }

    [Fact]
    public async Task Only_allowed_initiators_log_in_and_discovery_hides_the_target_from_others()
    {
        await using var h = await ServerHarness.StartAsync(diskAccess: new IscsiAccess([Allowed]));
        var allowed = await Inquiry(h, Allowed);
        Assert.True(allowed.ExitCode == 0, allowed.Describe("iscsi-inq as an allowed initiator"));

        var refused = await Inquiry(h, Stranger);
        Assert.True(refused.ExitCode != 0, refused.Describe("iscsi-inq as a stranger"));
        Assert.Contains("Authorization failure", refused.StandardError + refused.StandardOutput, StringComparison.OrdinalIgnoreCase);

        var hidden = await ExternalTool.RunAsync("iscsi-ls", "libiscsi-bin", Deadline, "-i", Stranger, $"iscsi://127.0.0.1:{h.Port}");
        Assert.True(hidden.ExitCode == 0, hidden.Describe("iscsi-ls as a stranger"));
        Assert.DoesNotContain($"{ServerHarness.Prefix}disk ", hidden.StandardOutput, StringComparison.Ordinal);
        Assert.Contains($"{ServerHarness.Prefix}ro ", hidden.StandardOutput, StringComparison.Ordinal); // open volumes stay listed

        var listed = await ExternalTool.RunAsync("iscsi-ls", "libiscsi-bin", Deadline, "-i", Allowed, $"iscsi://127.0.0.1:{h.Port}");
        Assert.Contains($"{ServerHarness.Prefix}disk ", listed.StandardOutput, StringComparison.Ordinal);
        await h.Catalog.WaitForNoSessionsAsync();
    }

    [Fact]
    public async Task Chap_admits_the_right_secret_and_refuses_a_wrong_or_missing_one()
    {
        await using var h = await ServerHarness.StartAsync(diskAccess: new IscsiAccess([], Chap));
        var ok = await Inquiry(h, Allowed, $"{Chap.User}%{Chap.Secret}");
        Assert.True(ok.ExitCode == 0, ok.Describe("iscsi-inq with the CHAP secret"));

        var wrong = await Inquiry(h, Allowed, $"{Chap.User}%wrong-secret-1");
        Assert.True(wrong.ExitCode != 0, wrong.Describe("iscsi-inq with a wrong CHAP secret"));
        Assert.Contains("Authentication failure", wrong.StandardError + wrong.StandardOutput, StringComparison.OrdinalIgnoreCase);

        var none = await Inquiry(h, Allowed);
        Assert.True(none.ExitCode != 0, none.Describe("iscsi-inq without credentials"));
        Assert.Equal(0, h.Catalog.OpenSessions);
    }

    [Fact]
    public async Task Mutual_chap_proves_the_target_to_the_initiator()
    {
        await using var h = await ServerHarness.StartAsync(diskAccess: new IscsiAccess([Allowed], Chap, Mutual));
        var ok = await Inquiry(h, Allowed, $"{Chap.User}%{Chap.Secret}", Mutual);
        Assert.True(ok.ExitCode == 0, ok.Describe("iscsi-inq with mutual CHAP"));

        // libiscsi checks the target's answer: a target that knows another secret is refused by the initiator.
        var impostor = await Inquiry(h, Allowed, $"{Chap.User}%{Chap.Secret}", Mutual with { Secret = "not-the-target" });
        Assert.True(impostor.ExitCode != 0, impostor.Describe("iscsi-inq expecting another target secret"));
        await h.Catalog.WaitForNoSessionsAsync();
    }
}

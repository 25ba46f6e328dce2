using System.Security.Cryptography;
using System.Text;
using Cairn.Core;
using Cairn.Frontends.Iscsi.Login;

namespace Cairn.Frontends.Iscsi.Tests;

/// <summary>The security stage alone: AuthMethod choice and the CHAP (MD5) exchange, one-way and mutual.</summary>
public sealed class LoginSecurityTests
{
    private static readonly ChapCredentials Initiator = new("alice", "initiator-sec");
    private static readonly ChapCredentials Target = new("cairn", "target-secret1");

    private static (bool Ok, Dictionary<string, string> Answers) Take(LoginSecurity s, params (string Key, string Value)[] keys)
    {
        var answers = new List<KeyValuePair<string, string>>();
        bool ok = s.Take([.. keys.Select(k => new KeyValuePair<string, string>(k.Key, k.Value))], answers);
        return (ok, answers.ToDictionary());
    }

    /// <summary>The initiator's side of CHAP-MD5, written from RFC 1994 §4.1 independently of the target's code.</summary>
    private static string Respond(string identifier, string secret, string challengeHex)
    {
        var input = new List<byte> { byte.Parse(identifier, System.Globalization.CultureInfo.InvariantCulture) };
        input.AddRange(Encoding.UTF8.GetBytes(secret));
        input.AddRange(Convert.FromHexString(challengeHex[2..]));
#pragma warning disable CA5351 // CHAP is MD5 by definition
        return "0x" + Convert.ToHexString(MD5.HashData([.. input]));
#pragma warning restore CA5351
    }

    private static (LoginSecurity Security, Dictionary<string, string> Challenge) Challenged(ChapCredentials? mutual = null)
    {
        var s = new LoginSecurity();
        s.Require(Initiator, mutual);
        var (ok, method) = Take(s, ("AuthMethod", "CHAP,None"));
        Assert.True(ok);
        Assert.Equal("CHAP", method["AuthMethod"]);
        Assert.False(s.Authenticated);
        var (ok2, challenge) = Take(s, ("CHAP_A", "7,5"));
        Assert.True(ok2);
        Assert.Equal("5", challenge["CHAP_A"]);
        Assert.StartsWith("0x", challenge["CHAP_C"], StringComparison.Ordinal);
        return (s, challenge);
    }

    [Fact]
    public void Without_a_secret_none_is_chosen_and_chap_alone_is_refused()
    {
        var open = new LoginSecurity();
        Assert.True(open.Authenticated);
        var (ok, answers) = Take(open, ("AuthMethod", "CHAP,None"));
        Assert.True(ok);
        Assert.Equal("None", answers["AuthMethod"]);

        var chapOnly = new LoginSecurity();
        Assert.False(Take(chapOnly, ("AuthMethod", "CHAP")).Ok);
    }

    [Fact]
    public void Auth_method_and_algorithm_in_one_request_get_the_challenge_at_once()
    {
        var s = new LoginSecurity();
        s.Require(Initiator, null);
        var (ok, answers) = Take(s, ("AuthMethod", "CHAP"), ("CHAP_A", "5"));
        Assert.True(ok);
        Assert.Equal("CHAP", answers["AuthMethod"]);
        Assert.Equal("5", answers["CHAP_A"]);
        Assert.True(Take(s, ("CHAP_N", "alice"), ("CHAP_R", Respond(answers["CHAP_I"], Initiator.Secret, answers["CHAP_C"]))).Ok);
        Assert.True(s.Authenticated);
        Assert.False(Take(new LoginSecurity(), ("CHAP_R", "0x00")).Ok); // a response before any challenge
    }

    [Fact]
    public void A_key_sent_twice_fails_authentication_instead_of_throwing()
    {
        var (s, _) = Challenged();
        Assert.False(Take(s, ("CHAP_N", "alice"), ("CHAP_N", "bob"), ("CHAP_R", "0x00")).Ok);
        Assert.Contains("sent twice", s.Failure, StringComparison.Ordinal);
    }

    [Fact]
    public void A_volume_with_a_secret_refuses_initiators_that_do_not_offer_chap()
    {
        var s = new LoginSecurity();
        s.Require(Initiator, null);
        Assert.False(s.Authenticated);
        Assert.False(Take(s, ("AuthMethod", "None")).Ok);

        var noMd5 = new LoginSecurity();
        noMd5.Require(Initiator, null);
        Take(noMd5, ("AuthMethod", "CHAP"));
        Assert.False(Take(noMd5, ("CHAP_A", "6,7")).Ok);
    }

    [Fact]
    public void The_right_response_authenticates_and_a_wrong_secret_or_user_does_not()
    {
        var (good, c) = Challenged();
        Assert.True(Take(good, ("CHAP_N", "alice"), ("CHAP_R", Respond(c["CHAP_I"], Initiator.Secret, c["CHAP_C"]))).Ok);
        Assert.True(good.Authenticated);

        var (wrongSecret, c2) = Challenged();
        Assert.False(Take(wrongSecret, ("CHAP_N", "alice"), ("CHAP_R", Respond(c2["CHAP_I"], "not-the-secret", c2["CHAP_C"]))).Ok);
        Assert.False(wrongSecret.Authenticated);

        var (wrongUser, c3) = Challenged();
        Assert.False(Take(wrongUser, ("CHAP_N", "mallory"), ("CHAP_R", Respond(c3["CHAP_I"], Initiator.Secret, c3["CHAP_C"]))).Ok);
    }

    [Fact]
    public void Mutual_chap_answers_the_initiators_challenge_with_the_target_secret()
    {
        var (s, c) = Challenged(Target);
        const string Challenge = "0x00112233445566778899aabbccddeeff";
        var (ok, answers) = Take(s, ("CHAP_N", "alice"), ("CHAP_R", Respond(c["CHAP_I"], Initiator.Secret, c["CHAP_C"])), ("CHAP_I", "77"), ("CHAP_C", Challenge));
        Assert.True(ok);
        Assert.Equal("cairn", answers["CHAP_N"]);
        Assert.Equal(Respond("77", Target.Secret, Challenge), answers["CHAP_R"], ignoreCase: true);
    }

    [Fact]
    public void Mutual_chap_is_refused_without_a_target_secret_or_with_our_own_challenge_reflected()
    {
        var (noSecret, c) = Challenged();
        Assert.False(Take(noSecret, ("CHAP_N", "alice"), ("CHAP_R", Respond(c["CHAP_I"], Initiator.Secret, c["CHAP_C"])), ("CHAP_I", "1"), ("CHAP_C", "0x0102")).Ok);

        var (reflected, c2) = Challenged(Target);
        Assert.False(Take(reflected, ("CHAP_N", "alice"), ("CHAP_R", Respond(c2["CHAP_I"], Initiator.Secret, c2["CHAP_C"])), ("CHAP_I", "1"), ("CHAP_C", c2["CHAP_C"])).Ok);
    }

    [Fact]
    public void Access_policies_validate_names_and_secret_lengths_and_never_print_secrets()
    {
        Assert.Null(new IscsiAccess(["iqn.2026-11.test:a"], Initiator, Target).Validate());
        Assert.Equal("allowedInitiators[1]", new IscsiAccess(["iqn.a:b", "bogus"]).Validate()?.Field);
        Assert.Equal("chap.secret", new IscsiAccess([], new ChapCredentials("u", "short")).Validate()?.Field);
        Assert.Equal("chap.secret", new IscsiAccess([], new ChapCredentials("u", "seventeen-bytes!!")).Validate()?.Field);
        Assert.Equal("mutualChap", new IscsiAccess([], null, Target).Validate()?.Field);
        Assert.Equal("mutualChap.secret", new IscsiAccess([], Initiator, Initiator with { User = "t" }).Validate()?.Field);
        Assert.DoesNotContain(Initiator.Secret, new IscsiAccess([], Initiator, Target).ToString(), StringComparison.Ordinal);
        Assert.True(new IscsiAccess(["IQN.2026-11.Test:A"]).Allows("iqn.2026-11.test:a"));
        Assert.False(new IscsiAccess(["iqn.2026-11.test:a"]).Allows("iqn.2026-11.test:b"));
        Assert.True(IscsiAccess.Open.Allows("iqn.anything"));
    }
}

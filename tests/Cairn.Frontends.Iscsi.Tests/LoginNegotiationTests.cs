using System.Text;
using Cairn.Frontends.Iscsi.Login;

namespace Cairn.Frontends.Iscsi.Tests;

public sealed class LoginNegotiationTests
{
    private static List<KeyValuePair<string, string>> Keys(string text) =>
        TextKeys.Parse(Encoding.UTF8.GetBytes(text.Replace('|', '\0'))) ?? throw new InvalidOperationException("bad keys");

    private static Dictionary<string, string> Answers(LoginNegotiator n, string text) => n.Negotiate(Keys(text)).ToDictionary();

    [Fact]
    public void Text_keys_round_trip_and_reject_malformed_pairs()
    {
        var pairs = Keys("InitiatorName=iqn.x|SendTargets=All|Empty=|");
        Assert.Equal([new("InitiatorName", "iqn.x"), new("SendTargets", "All"), new("Empty", "")], pairs);
        Assert.Equal("InitiatorName=iqn.x\0SendTargets=All\0Empty=\0", Encoding.UTF8.GetString(TextKeys.Serialize(pairs)));
        Assert.Null(TextKeys.Parse("NoEquals\0"u8));
        Assert.Null(TextKeys.Parse("=value\0"u8));
    }

    [Fact]
    public void Libiscsi_offer_is_answered_with_the_rfc_results()
    {
        var n = new LoginNegotiator();
        var a = Answers(n, "InitiatorName=iqn.i|TargetName=iqn.t|SessionType=Normal|HeaderDigest=None,CRC32C|DataDigest=None|" +
            "InitialR2T=No|ImmediateData=Yes|MaxBurstLength=262144|FirstBurstLength=262144|DefaultTime2Wait=2|DefaultTime2Retain=0|" +
            "MaxOutstandingR2T=1|ErrorRecoveryLevel=0|IFMarker=No|OFMarker=No|MaxConnections=1|MaxRecvDataSegmentLength=65536|" +
            "DataPDUInOrder=Yes|DataSequenceInOrder=Yes");
        Assert.Equal("None", a["HeaderDigest"]); // the initiator's first choice that we support
        Assert.Equal("No", a["InitialR2T"]);
        Assert.Equal("Yes", a["ImmediateData"]);
        Assert.Equal("262144", a["MaxBurstLength"]);
        Assert.Equal("262144", a["FirstBurstLength"]);
        Assert.Equal("0", a["DefaultTime2Retain"]);
        Assert.Equal("0", a["ErrorRecoveryLevel"]);
        Assert.Equal("1", a["MaxConnections"]);
        Assert.False(a.ContainsKey("InitiatorName")); // declarative: no answer
        Assert.False(a.ContainsKey("MaxRecvDataSegmentLength")); // declared separately
        var p = n.Parameters;
        Assert.Equal(("iqn.i", "iqn.t", SessionType.Normal), (p.InitiatorName, p.TargetName, p.SessionType));
        Assert.Equal(65536, p.InitiatorMaxRecvDataSegmentLength);
        Assert.False(p.InitialR2T);
        Assert.False(p.HeaderDigest);
    }

    [Fact]
    public void Crc32c_is_chosen_when_offered_first_but_never_on_discovery()
    {
        var normal = new LoginNegotiator();
        Assert.Equal("CRC32C", Answers(normal, "HeaderDigest=CRC32C,None|DataDigest=CRC32C")["HeaderDigest"]);
        Assert.True(normal.Parameters.HeaderDigest && normal.Parameters.DataDigest);

        var discovery = new LoginNegotiator();
        var a = Answers(discovery, "SessionType=Discovery|HeaderDigest=CRC32C,None|DataDigest=CRC32C");
        Assert.Equal("None", a["HeaderDigest"]);
        Assert.Equal("Reject", a["DataDigest"]);
        Assert.False(discovery.Parameters.HeaderDigest || discovery.Parameters.DataDigest);
    }

    [Fact]
    public void Unknown_keys_are_not_understood_and_bad_values_rejected()
    {
        var a = Answers(new LoginNegotiator(), "X-com.example.Thing=1|MaxBurstLength=12|InitialR2T=Maybe|ErrorRecoveryLevel=2");
        Assert.Equal("NotUnderstood", a["X-com.example.Thing"]);
        Assert.Equal("Reject", a["MaxBurstLength"]); // below 512
        Assert.Equal("Reject", a["InitialR2T"]);
        Assert.Equal("0", a["ErrorRecoveryLevel"]); // the minimum of 2 and ours
    }

    [Fact]
    public void First_burst_never_exceeds_max_burst()
    {
        var n = new LoginNegotiator();
        var a = Answers(n, "FirstBurstLength=262144|MaxBurstLength=16384");
        Assert.Equal("16384", a["MaxBurstLength"]);
        Assert.Equal("16384", a["FirstBurstLength"]);
        Assert.Equal(16384, n.Parameters.FirstBurstLength);
    }

    [Fact]
    public void Booleans_follow_or_and_and_rules()
    {
        var n = new LoginNegotiator();
        var a = Answers(n, "InitialR2T=Yes|ImmediateData=No|DataPDUInOrder=No");
        Assert.Equal("Yes", a["InitialR2T"]); // OR: either side wanting R2T wins
        Assert.Equal("No", a["ImmediateData"]); // AND
        Assert.Equal("Yes", a["DataPDUInOrder"]); // OR with our Yes
        Assert.True(n.Parameters.InitialR2T);
        Assert.False(n.Parameters.ImmediateData);
    }

    [Fact]
    public void Security_keys_are_left_to_login_security()
    {
        var n = new LoginNegotiator();
        var answers = Answers(n, "AuthMethod=CHAP,None|CHAP_A=5|HeaderDigest=None");
        Assert.False(answers.ContainsKey("AuthMethod"));
        Assert.False(answers.ContainsKey("CHAP_A"));
        Assert.Equal("None", answers["HeaderDigest"]);
    }

    [Fact]
    public void Our_receive_limit_is_declared_once()
    {
        var n = new LoginNegotiator();
        var answers = new List<KeyValuePair<string, string>>();
        n.AddDeclarations(answers);
        n.AddDeclarations(answers);
        Assert.Equal([new("MaxRecvDataSegmentLength", TargetLimits.MaxRecvDataSegmentLength.ToString(System.Globalization.CultureInfo.InvariantCulture))], answers);
    }
}

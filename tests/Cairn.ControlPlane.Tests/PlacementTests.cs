using Cairn.ControlPlane.Placement;

namespace Cairn.ControlPlane.Tests;

public sealed class PlacementTests
{
    private const long GiB = 1L << 30;

    private static NodeCandidate Node(string name, string zone = "z1", string rack = "r1", NodeState state = NodeState.Up,
        long capacity = 100 * GiB, long free = 100 * GiB, long provisioned = 0) =>
        new(name, zone, rack, state, [new PoolCandidate("p", capacity, free, provisioned)]);

    private static PlacementDecision Place(PlacementPolicy policy, params NodeCandidate[] nodes) =>
        Placer.Place(new PlacementRequest("v", 10 * GiB, policy), nodes);

    [Fact]
    public void One_replica_goes_to_the_pool_with_the_least_provisioned()
    {
        var decision = Place(PlacementPolicy.Default, Node("a", provisioned: 50 * GiB), Node("b", provisioned: 10 * GiB), Node("c", provisioned: 30 * GiB));

        Assert.True(decision.Succeeded);
        Assert.Equal("b", Assert.Single(decision.Replicas).Node);
        Assert.Equal(NodeVerdictKind.Chosen, decision.Verdicts.Single(v => v.Node == "b").Kind);
        Assert.All(decision.Verdicts.Where(v => v.Node != "b"), v => Assert.Contains("ranked below", v.Reason, StringComparison.Ordinal));
    }

    [Fact]
    public void Within_a_node_the_least_provisioned_pool_with_room_is_used()
    {
        var node = new NodeCandidate("a", "z1", "r1", NodeState.Up,
            [new PoolCandidate("full", 100 * GiB, GiB / 2, 0), new PoolCandidate("busy", 100 * GiB, 90 * GiB, 80 * GiB), new PoolCandidate("idle", 100 * GiB, 20 * GiB, 5 * GiB)]);

        var decision = Place(PlacementPolicy.Default, node);

        Assert.Equal("idle", Assert.Single(decision.Replicas).Pool);
    }

    [Fact]
    public void Equal_provisioning_prefers_more_free_bytes_then_the_name()
    {
        var decision = Place(new PlacementPolicy(2), Node("a", free: 50 * GiB), Node("c", free: 80 * GiB), Node("b", free: 50 * GiB));

        Assert.Equal(["c", "a"], decision.Replicas.Select(r => r.Node));
    }

    [Fact]
    public void Down_draining_full_and_excluded_nodes_are_never_chosen_and_say_why()
    {
        var request = new PlacementRequest("v", 10 * GiB, new PlacementPolicy(1), new HashSet<string> { "holder" });
        var decision = Placer.Place(request,
        [
            Node("down", state: NodeState.Down), Node("drained", state: NodeState.Draining), Node("full", free: GiB / 4),
            Node("holder"), new NodeCandidate("empty", "z1", "r1", NodeState.Up, []), Node("ok", provisioned: 90 * GiB),
        ]);

        Assert.Equal("ok", Assert.Single(decision.Replicas).Node);
        string Reason(string node) => decision.Verdicts.Single(v => v.Node == node).Reason;
        Assert.Equal("node is Down", Reason("down"));
        Assert.Contains("Draining", Reason("drained"), StringComparison.Ordinal);
        Assert.Contains("no pool has room", Reason("full"), StringComparison.Ordinal);
        Assert.Contains("already holds a replica", Reason("holder"), StringComparison.Ordinal);
        Assert.Contains("no pools", Reason("empty"), StringComparison.Ordinal);
    }

    [Fact]
    public void Small_volumes_fit_pools_with_less_than_the_minimum_free()
    {
        var decision = Placer.Place(new PlacementRequest("v", 64L << 20, PlacementPolicy.Default), [Node("a", free: 100L << 20)]);

        Assert.True(decision.Succeeded);
    }

    [Fact]
    public void Two_replicas_never_share_a_node()
    {
        var decision = Place(new PlacementPolicy(3), Node("a"), Node("b"));

        Assert.False(decision.Succeeded);
        Assert.Empty(decision.Replicas);
        Assert.Equal("3 replicas need 3 eligible nodes; there are 2 (a, b)", decision.FailureReason);
    }

    [Fact]
    public void Required_zone_spread_puts_each_replica_in_its_own_zone_even_over_better_ranked_nodes()
    {
        var decision = Place(new PlacementPolicy(3, SpreadLevel.Zone),
            Node("a1", "a", provisioned: 0), Node("a2", "a", provisioned: 0), Node("b1", "b", provisioned: 40 * GiB), Node("c1", "c", provisioned: 60 * GiB));

        Assert.True(decision.Succeeded);
        Assert.Equal(["a", "b", "c"], decision.Replicas.Select(r => r.Zone).Order());
        var skipped = decision.Verdicts.Single(v => v.Kind == NodeVerdictKind.NotChosen);
        Assert.Matches("^zone a already holds replica 0 \\(on a[12]\\)$", skipped.Reason);
    }

    [Fact]
    public void Required_zone_spread_that_the_cluster_cannot_meet_fails_with_the_reason()
    {
        var decision = Place(new PlacementPolicy(3, SpreadLevel.Zone),
            Node("a1", "a"), Node("a2", "a"), Node("b1", "b"), Node("c1", "c", state: NodeState.Down));

        Assert.False(decision.Succeeded);
        Assert.Equal("3 replicas need 3 zones with an eligible node; 2 have one (a, b); excluded c1: node is Down", decision.FailureReason);
        var error = Assert.Throws<CairnException>(() => decision.ThrowIfFailed());
        Assert.Equal(CairnErrorCode.Unavailable, error.Code);
        Assert.StartsWith("cannot place volume 'v': 3 replicas need 3 zones", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Preferred_zone_spread_falls_back_to_distinct_racks_then_to_any_node()
    {
        var decision = Place(new PlacementPolicy(3, SpreadLevel.Zone, SpreadMode.Preferred),
            Node("a1", "a", "r1"), Node("a2", "a", "r1", provisioned: 1 * GiB), Node("a3", "a", "r2", provisioned: 50 * GiB), Node("b1", "b", "r1", provisioned: 90 * GiB));

        Assert.True(decision.Succeeded);
        // b1 (the only other zone) first, then a1 (best ranked in zone a), then a3 (another rack), not a2 (a1's rack).
        Assert.Equal(["a1", "a3", "b1"], decision.Replicas.Select(r => r.Node).Order(StringComparer.Ordinal));
        var shared = decision.Verdicts.Single(v => v.Node == "a3");
        Assert.Contains("shares zone a with an earlier replica", shared.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Required_rack_spread_treats_same_named_racks_in_different_zones_as_different()
    {
        var decision = Place(new PlacementPolicy(2, SpreadLevel.Rack), Node("a", "z1", "r1"), Node("b", "z2", "r1"));

        Assert.True(decision.Succeeded);
        Assert.Equal(2, decision.Replicas.Count);
    }

    [Fact]
    public void Required_rack_spread_fails_when_racks_run_out()
    {
        var decision = Place(new PlacementPolicy(2, SpreadLevel.Rack), Node("a", "z1", "r1"), Node("b", "z1", "r1"));

        Assert.Equal("2 replicas need 2 racks with an eligible node; 1 has one (z1/r1)", decision.FailureReason);
    }

    [Fact]
    public void No_eligible_node_at_all_says_so()
    {
        var decision = Place(PlacementPolicy.Default, Node("a", state: NodeState.Draining));

        Assert.Equal("1 replica needs 1 eligible node; there are none; excluded a: node is Draining (takes no new volumes)", decision.FailureReason);
    }

    [Fact]
    public void The_same_view_gives_the_same_decision()
    {
        var nodes = Enumerable.Range(0, 50).Select(i => Node($"n{i:D2}", $"z{i % 3}", $"r{i % 5}", free: (100 - i) * GiB, provisioned: i % 7 * GiB)).ToArray();
        var policy = new PlacementPolicy(3, SpreadLevel.Zone);

        var first = Place(policy, nodes);
        var second = Place(policy, [.. nodes.Reverse()]);

        Assert.Equal(first.Replicas, second.Replicas);
        Assert.Equal(first.Verdicts, second.Verdicts);
    }

    [Theory]
    [InlineData("zone", SpreadLevel.Zone, SpreadMode.Required)]
    [InlineData("Rack:preferred", SpreadLevel.Rack, SpreadMode.Preferred)]
    [InlineData("node:required", SpreadLevel.Node, SpreadMode.Required)]
    [InlineData(null, SpreadLevel.Node, SpreadMode.Required)]
    public void Spread_parses(string? text, SpreadLevel level, SpreadMode mode) =>
        Assert.Equal((level, mode), PlacementPolicy.ParseSpread(text));

    [Theory]
    [InlineData("region")]
    [InlineData("zone:maybe")]
    [InlineData("zone:required:x")]
    [InlineData("1")]
    public void Bad_spreads_name_the_field(string text)
    {
        var error = Assert.Throws<CairnException>(() => PlacementPolicy.ParseSpread(text));
        Assert.Equal("spread", error.Field);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(6)]
    public void Replica_counts_out_of_range_are_refused(int replicas)
    {
        var error = Assert.Throws<CairnException>(() => Place(new PlacementPolicy(replicas), Node("a")));
        Assert.Equal("replicas", error.Field);
    }

    [Fact]
    public void A_pinned_node_is_the_only_candidate_and_still_obeys_the_rules()
    {
        var pinned = Placer.Place(new PlacementRequest("v", GiB, PlacementPolicy.Default, PinnedNode: "b"), [Node("a"), Node("b", provisioned: 99 * GiB)]);
        var drained = Placer.Place(new PlacementRequest("v", GiB, PlacementPolicy.Default, PinnedNode: "b"), [Node("a"), Node("b", state: NodeState.Draining)]);

        Assert.Equal("b", Assert.Single(pinned.Replicas).Node);
        Assert.Equal("the request pins node b", pinned.Verdicts.Single(v => v.Node == "a").Reason);
        Assert.False(drained.Succeeded);
        Assert.Contains("b: node is Draining", drained.FailureReason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_pinned_node_owns_a_replicated_volume_and_the_rules_place_the_other_replicas()
    {
        var nodes = new[] { Node("a", zone: "z1"), Node("b", zone: "z2"), Node("c", zone: "z3", provisioned: 90 * GiB), Node("d", zone: "z1") };

        var decision = Placer.Place(new PlacementRequest("v", GiB, new PlacementPolicy(3, SpreadLevel.Zone), PinnedNode: "c"), nodes);

        Assert.True(decision.Succeeded, decision.FailureReason);
        Assert.Equal(["c", "a", "b"], decision.Replicas.Select(r => r.Node)); // c first although it ranks last; then one per other zone
        Assert.Contains("the owner: the request pins it", decision.Verdicts.Single(v => v.Node == "c").Reason, StringComparison.Ordinal);
        Assert.Contains("zone z1 already holds replica 1", decision.Verdicts.Single(v => v.Node == "d").Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_replicated_volume_pinned_to_a_node_that_cannot_take_it_is_not_placed_elsewhere()
    {
        var nodes = new[] { Node("a"), Node("b", state: NodeState.Draining), Node("c"), Node("d") };

        var drained = Placer.Place(new PlacementRequest("v", GiB, new PlacementPolicy(3), PinnedNode: "b"), nodes);
        var unknown = Placer.Place(new PlacementRequest("v", GiB, new PlacementPolicy(3), PinnedNode: "x"), nodes);

        Assert.False(drained.Succeeded);
        Assert.Equal("the request pins node b, which cannot take it; excluded b: node is Draining (takes no new volumes)", drained.FailureReason);
        Assert.False(unknown.Succeeded);
        Assert.Equal("the request pins node x, which is not in the cluster", unknown.FailureReason);
    }
}

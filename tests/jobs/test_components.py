"""Connected components on hand-built graphs, checked against a union-find on the driver."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from jobs.components import ComponentsDidNotConverge, connected_components


def union_find(edges):
    """The reference: networkx's components, labelled by their smallest node."""
    graph = nx.Graph()
    graph.add_edges_from(edges)
    return {node: min(comp) for comp in nx.connected_components(graph) for node in comp}


def labels(spark, edges, kind="long", max_rounds=40):
    df = spark.createDataFrame(edges, f"src {kind}, dst {kind}")
    result = connected_components(df, max_rounds=max_rounds)
    return {r["node"]: r["component"] for r in result.labels.collect()}, result.rounds


def test_chain_star_isolated_and_two_components(spark):
    edges = [(5, 4), (4, 3), (3, 2),  # a chain, given from its high end
             (10, 20), (10, 30), (10, 40), (10, 11),  # a star around 10
             (7, 7),  # a self-loop: node 7 is alone
             (100, 101), (101, 100)]  # the same edge both ways
    got, _ = labels(spark, edges)
    assert got == {2: 2, 3: 2, 4: 2, 5: 2, 10: 10, 11: 10, 20: 10, 30: 10, 40: 10,
                   100: 100, 101: 100}  # 7 has no edge to anything else: not a member of any


@pytest.mark.parametrize("n,seed", [(600, 1), (2000, 2)])
def test_long_paths_in_random_id_order(spark, n, seed):
    ids = list(range(n))
    random.Random(seed).shuffle(ids)  # the worst order for min-label propagation
    edges = [(ids[i], ids[i + 1]) for i in range(n - 1)]
    got, rounds = labels(spark, edges)
    assert got == union_find(edges)
    assert set(got.values()) == {0}
    assert rounds <= 12  # O(log² n), far below the n hops label propagation would need


def test_random_forest_of_components_with_string_ids(spark):
    rng = random.Random(5)
    nodes = [f"{rng.getrandbits(64):016x}" for _ in range(400)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(300)]
    got, _ = labels(spark, edges, kind="string")
    want = {k: v for k, v in union_find(edges).items()
            if any(k in e for e in edges if e[0] != e[1])}
    assert got == want


def test_empty_graph(spark):
    got, rounds = labels(spark, [])
    assert got == {} and rounds == 0


def test_too_few_rounds_fails_loudly(spark):
    ids = list(range(300))
    random.Random(3).shuffle(ids)
    with pytest.raises(ComponentsDidNotConverge, match="did not converge in 1 rounds"):
        labels(spark, [(ids[i], ids[i + 1]) for i in range(299)], max_rounds=1)

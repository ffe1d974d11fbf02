"""Connected components on hand-built graphs, checked against networkx on the driver, both ways:
the distributed rounds (``one_task_edges=0``) and one task (udfs.components)."""

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


def labels(spark, edges, kind="long", max_rounds=40, one_task_edges=0):
    df = spark.createDataFrame(edges, f"src {kind}, dst {kind}")
    result = connected_components(df, max_rounds=max_rounds, one_task_edges=one_task_edges)
    got = result.labels.collect()
    assert len(got) == len({r["node"] for r in got})  # one label per node
    return {r["node"]: r["component"] for r in got}, result.rounds


ROUNDS, ONE_TASK = 0, 10_000
both_ways = pytest.mark.parametrize("one_task_edges", [ROUNDS, ONE_TASK],
                                    ids=["rounds", "one_task"])


@both_ways
def test_chain_star_isolated_and_two_components(spark, one_task_edges):
    edges = [(5, 4), (4, 3), (3, 2),  # a chain, given from its high end
             (10, 20), (10, 30), (10, 40), (10, 11),  # a star around 10
             (7, 7),  # a self-loop: node 7 is alone
             (100, 101), (101, 100)]  # the same edge both ways
    got, _ = labels(spark, edges, one_task_edges=one_task_edges)
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


@both_ways
def test_random_forest_of_components_with_string_ids(spark, one_task_edges):
    rng = random.Random(5)
    nodes = [f"{rng.getrandbits(64):016x}" for _ in range(400)]
    nodes += ["Zebra", "zebra", "é-accent", "e-plain", "ab", "a"]  # byte order: Z < a < e < z < é
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(300)]
    edges += [("zebra", "Zebra"), ("é-accent", "e-plain"), ("ab", "a"), ("a", "zebra")]
    got, _ = labels(spark, edges, kind="string", one_task_edges=one_task_edges)
    want = {k: v for k, v in union_find(edges).items()
            if any(k in e for e in edges if e[0] != e[1])}
    assert got == want


@both_ways
def test_empty_graph(spark, one_task_edges):
    got, rounds = labels(spark, [], one_task_edges=one_task_edges)
    assert got == {} and rounds == 0


def test_a_long_path_in_one_task_takes_no_rounds_and_gives_the_rounds_labels(spark):
    ids = list(range(3000))
    random.Random(4).shuffle(ids)
    edges = [(ids[i], ids[i + 1]) for i in range(1500)] + [(ids[i], ids[i + 1])
                                                          for i in range(1501, 2999)]
    one_task, rounds = labels(spark, edges, one_task_edges=len(edges))
    assert rounds == 0
    assert one_task == union_find(edges) == labels(spark, edges)[0]
    assert len(set(one_task.values())) == 2


def test_one_edge_more_than_one_task_edges_takes_the_rounds(spark):
    edges = [(i, i + 1) for i in range(50)]
    got, rounds = labels(spark, edges, one_task_edges=49)
    assert rounds >= 1 and set(got.values()) == {0}


def test_too_few_rounds_fails_loudly(spark):
    ids = list(range(300))
    random.Random(3).shuffle(ids)
    with pytest.raises(ComponentsDidNotConverge, match="did not converge in 1 rounds"):
        labels(spark, [(ids[i], ids[i + 1]) for i in range(299)], max_rounds=1)

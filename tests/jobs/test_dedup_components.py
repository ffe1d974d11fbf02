"""jobs.dedup.components on hand-built graphs, checked against networkx, both ways: the
distributed rounds and ``smallest_node_labels`` (the one task's labelling)."""

from __future__ import annotations

import random

import networkx as nx
import pyarrow as pa
import pytest

from jobs.dedup.components import ComponentsDidNotConverge, distributed, smallest_node_labels


def union_find(edges):
    """The reference: networkx's components, labelled by their smallest node."""
    graph = nx.Graph()
    graph.add_edges_from(edges)
    return {node: min(comp) for comp in nx.connected_components(graph) for node in comp}


def labels(spark, edges, kind="long", max_rounds=40, one_task=False):
    if one_task:  # as the one task calls it: without self-loops (a file is not its own duplicate)
        kept = [(u, v) for u, v in edges if u != v]
        arrow = pa.int64() if kind == "long" else pa.string()
        nodes, components = smallest_node_labels(pa.array([u for u, _ in kept], arrow),
                                                 pa.array([v for _, v in kept], arrow))
        return dict(zip(nodes.to_pylist(), components.to_pylist())), 0
    df = spark.createDataFrame(edges, f"src {kind}, dst {kind}")
    result = distributed(df, max_rounds=max_rounds)
    got = result.labels.collect()
    assert len(got) == len({r["node"] for r in got})  # one label per node
    return {r["node"]: r["component"] for r in got}, result.rounds


both_ways = pytest.mark.parametrize("one_task", [False, True], ids=["rounds", "one_task"])


@both_ways
def test_chain_star_isolated_and_two_components(spark, one_task):
    edges = [(5, 4), (4, 3), (3, 2),  # a chain, given from its high end
             (10, 20), (10, 30), (10, 40), (10, 11),  # a star around 10
             (7, 7),  # a self-loop: node 7 is alone
             (100, 101), (101, 100)]  # the same edge both ways
    got, _ = labels(spark, edges, one_task=one_task)
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
def test_random_forest_of_components_with_string_ids(spark, one_task):
    rng = random.Random(5)
    nodes = [f"{rng.getrandbits(64):016x}" for _ in range(400)]
    nodes += ["Zebra", "zebra", "é-accent", "e-plain", "ab", "a"]  # byte order: Z < a < e < z < é
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(300)]
    edges += [("zebra", "Zebra"), ("é-accent", "e-plain"), ("ab", "a"), ("a", "zebra")]
    got, _ = labels(spark, edges, kind="string", one_task=one_task)
    want = {k: v for k, v in union_find(edges).items()
            if any(k in e for e in edges if e[0] != e[1])}
    assert got == want


@both_ways
def test_empty_graph(spark, one_task):
    got, rounds = labels(spark, [], one_task=one_task)
    assert got == {} and rounds == 0


def test_a_long_path_in_one_task_gives_the_rounds_labels(spark):
    ids = list(range(3000))
    random.Random(4).shuffle(ids)
    edges = [(ids[i], ids[i + 1]) for i in range(1500)] + [(ids[i], ids[i + 1])
                                                          for i in range(1501, 2999)]
    one_task, _ = labels(spark, edges, one_task=True)
    assert one_task == union_find(edges) == labels(spark, edges)[0]
    assert len(set(one_task.values())) == 2


def test_too_few_rounds_fails_loudly(spark):
    ids = list(range(300))
    random.Random(3).shuffle(ids)
    with pytest.raises(ComponentsDidNotConverge, match="did not converge in 1 rounds"):
        labels(spark, [(ids[i], ids[i + 1]) for i in range(299)], max_rounds=1)


# smallest_node_labels alone

def run(edges, kind):
    u = pa.array([a for a, _ in edges], kind)
    v = pa.array([b for _, b in edges], kind)
    nodes, components = smallest_node_labels(u, v)
    return nodes.to_pylist(), dict(zip(nodes.to_pylist(), components.to_pylist()))


def test_integer_nodes_in_random_order_match_networkx():
    rng = random.Random(7)
    edges = [(rng.randrange(-500, 500), rng.randrange(-500, 500)) for _ in range(700)]
    nodes, got = run(edges, pa.int64())
    assert nodes == sorted({n for e in edges for n in e})
    assert got == union_find(edges)


def test_string_nodes_take_the_byte_wise_smallest():
    edges = [("zebra", "Zebra"), ("é", "z"), ("b", "ab"), ("ab", "abc")]
    nodes, got = run(edges, pa.string())
    assert nodes == ["Zebra", "ab", "abc", "b", "z", "zebra", "é"]
    assert got == {"Zebra": "Zebra", "zebra": "Zebra", "é": "z", "z": "z",
                   "ab": "ab", "b": "ab", "abc": "ab"}


def test_no_edges_and_bad_edges():
    assert run([], pa.string()) == ([], {})
    with pytest.raises(ValueError, match="differ in length"):
        smallest_node_labels(pa.array([1, 2]), pa.array([1]))
    with pytest.raises(ValueError, match="null ends"):
        smallest_node_labels(pa.array([1, None]), pa.array([2, 3]))


def test_chunked_arrays_are_accepted():
    u = pa.chunked_array([["a", "b"], ["c"]])
    v = pa.chunked_array([["b"], ["d", "e"]])  # edges a-b, b-d, c-e
    nodes, components = smallest_node_labels(u, v)
    assert nodes.to_pylist() == ["a", "b", "c", "d", "e"]
    assert components.to_pylist() == ["a", "a", "c", "a", "c"]

"""udfs.components: one-process connected components, labelled by the smallest node."""

from __future__ import annotations

import random

import networkx as nx
import pyarrow as pa
import pytest

from udfs.components import smallest_node_labels


def reference(edges):
    graph = nx.Graph()
    graph.add_edges_from(edges)
    return {node: min(comp) for comp in nx.connected_components(graph) for node in comp}


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
    assert got == reference(edges)


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

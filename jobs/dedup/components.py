"""Step 6, components: the connected components of the verified edges, each labelled by its
smallest file id, so two runs give identical clusters.

``distributed``: alternating large-star and small-star rounds (Kiveris, Lattanzi, Mirrokni,
Rastogi, Vassilvitskii, "Connected Components in MapReduce and Beyond", SoCC 2014), which converge
in O(log² n) rounds on any graph, including the long paths where plain min-label propagation needs
a round per hop. Edges are kept oriented from the larger to the smaller node id:

- large-star: every node u links each larger neighbour v to m(u), the smallest of u and its
  neighbours;
- small-star: every node u links itself and each smaller neighbour v to the smallest of those.

Both preserve connectivity. The graph has converged when it is a set of stars around their smallest
node: no edge points to a node that itself points somewhere, and no node points to two nodes. Then
each edge (u, m) says "u belongs to the component of m". Each round's edges are checkpointed
(``localCheckpoint``) to cut the plan's lineage, which otherwise doubles every round. Nothing is
collected to the driver but the convergence counts. No GraphFrames: its connectedComponents needs a
reliable checkpoint directory and a Spark-version-matched jar, and the algorithm is a few joins.

``smallest_node_labels``: the same labels in one process (scipy), for the one task that finds the
clusters of a small input (``jobs.dedup.representatives``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame


class ComponentsDidNotConverge(RuntimeError):
    """Connected components needed more than the allowed rounds."""


@dataclass
class Components:
    labels: DataFrame  # node, component: every node of an edge, component = its smallest node id
    rounds: int


def _oriented(edges: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return (edges.select(F.greatest("src", "dst").alias("u"), F.least("src", "dst").alias("v"))
            .where(F.col("u") != F.col("v")).distinct())


def _large_star(e: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    both = e.unionByName(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
    low = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (both.join(low, "u").where(F.col("v") > F.col("u"))
            .select(F.col("v").alias("u"), F.col("m").alias("v")))  # small-star dedups


def _small_star(e: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    low = e.groupBy("u").agg(F.min("v").alias("m"))
    neighbours = (e.join(low, "u").where(F.col("v") != F.col("m"))
                  .select(F.col("v").alias("u"), F.col("m").alias("v")))
    return neighbours.unionByName(low.select("u", F.col("m").alias("v"))).distinct()


def _violations(e: DataFrame) -> int:
    """Edges that keep ``e`` from being a set of stars around their smallest nodes."""
    from pyspark.sql import functions as F

    out_degree = e.groupBy("u").count()
    chained = e.join(out_degree.select(F.col("u").alias("v")), "v", "left_semi")
    forked = out_degree.where(F.col("count") > 1)
    return chained.select("u").unionByName(forked.select("u")).count()  # one job


def distributed(edges: DataFrame, max_rounds: int = 40) -> Components:
    """Label every node of a non-loop edge in ``edges`` (columns ``src``, ``dst``; any orderable
    type). Raises ComponentsDidNotConverge after ``max_rounds`` rounds without convergence, so a
    caller never writes a half-merged clustering."""
    from pyspark.sql import functions as F

    e = _oriented(edges).localCheckpoint(eager=True)
    rounds = 0
    while _violations(e) > 0:
        if rounds == max_rounds:
            raise ComponentsDidNotConverge(
                f"connected components did not converge in {max_rounds} rounds "
                "(raise dedup.max_rounds)")
        e = _small_star(_large_star(e)).localCheckpoint(eager=True)
        rounds += 1
    labels = e.select(F.col("u").alias("node"), F.col("v").alias("component")).unionByName(
        e.select(F.col("v").alias("node"), F.col("v").alias("component"))).distinct()
    return Components(labels=labels, rounds=rounds)


def smallest_node_labels(u: pa.Array, v: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Every node of the edges ``(u[i], v[i])`` (ascending) and its component's smallest node, in
    one process: ``scipy.sparse.csgraph.connected_components`` on the nodes' sorted positions.
    "Smallest" is Arrow's order, which for strings compares UTF-8 bytes like Spark's, so the
    labels equal ``distributed``'s node for node.

    ``u`` and ``v``: equal-length Arrow arrays (or chunked arrays) of one type, no nulls.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    u, v = (x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x for x in (u, v))
    if len(u) != len(v):
        raise ValueError(f"edge ends differ in length: {len(u)} != {len(v)}")
    if u.null_count or v.null_count:
        raise ValueError("edges must not have null ends")
    if len(u) == 0:
        return pa.array([], u.type), pa.array([], u.type)
    encoded = pc.dictionary_encode(pa.concat_arrays([u, v]))
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    nodes = encoded.dictionary.take(order)  # ascending; node k is nodes[k]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    ends = position[encoded.indices.to_numpy()]
    m, n = len(u), len(order)
    graph = coo_array((np.ones(m, dtype=np.int8), (ends[:m], ends[m:])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    # positions ascend with the nodes, so a component's first position is its smallest node
    _, first = np.unique(label, return_index=True)
    return nodes, nodes.take(pa.array(first[label]))

"""Connected components of an edge DataFrame, computed on the cluster with the DataFrame API.

Alternating large-star and small-star rounds (Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii,
"Connected Components in MapReduce and Beyond", SoCC 2014), which converge in O(log² n) rounds on
any graph, including the long paths where plain min-label propagation needs a round per hop.
Edges are kept oriented from the larger to the smaller node id:

- large-star: every node u links each larger neighbour v to m(u), the smallest of u and its
  neighbours;
- small-star: every node u links itself and each smaller neighbour v to the smallest of those.

Both preserve connectivity. The graph has converged when it is a set of stars around their smallest
node: no edge points to a node that itself points somewhere, and no node points to two nodes. Then
each edge (u, m) says "u belongs to the component of m" and the component's id is its smallest node
id, so the labelling is deterministic. Each round's edges are checkpointed (``localCheckpoint``) to
cut the plan's lineage, which otherwise doubles every round. Nothing is collected to the driver but
the convergence counts.

A graph of at most ``one_task_edges`` edges skips the rounds: its edges go to one executor task,
which labels them with ``udfs.components`` (scipy) — the same labels. Each round costs two
shuffles and their jobs' fixed latency whatever the graph's size: the 4× dedup bench's 33,698
candidate edges took 4.5 s in 3 rounds and 0.6 s in one task (local[2], bench/RESULTS.md).

No GraphFrames: its connectedComponents needs a reliable checkpoint directory and a
Spark-version-matched jar, and the algorithm is a few joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


def _in_one_task(e: DataFrame) -> DataFrame:
    """(node, component) of the oriented edges ``e``, computed by one task (udfs.components)."""
    from pyspark.sql.types import StructField, StructType

    from jobs.pyworker import map_in_arrow

    kind = e.schema["u"].dataType
    schema = StructType([StructField("node", kind, False), StructField("component", kind, False)])

    def run(batches):
        import pyarrow as pa

        from udfs.components import smallest_node_labels

        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        nodes, components = smallest_node_labels(table.column("u").combine_chunks(),
                                                 table.column("v").combine_chunks())
        yield pa.RecordBatch.from_arrays([nodes, components], names=["node", "component"])

    return map_in_arrow(e.repartition(1), run, schema)


def connected_components(edges: DataFrame, max_rounds: int = 40,
                         one_task_edges: int = 0) -> Components:
    """Label every node of a non-loop edge in ``edges`` (columns ``src``, ``dst``; any orderable type).

    Up to ``one_task_edges`` distinct edges are labelled in one task (``rounds`` is then 0); more
    go through the rounds. Raises ComponentsDidNotConverge after ``max_rounds`` rounds without
    convergence, so a caller never writes a half-merged clustering.
    """
    from pyspark.sql import functions as F

    e = _oriented(edges).localCheckpoint(eager=True)
    if one_task_edges and e.count() <= one_task_edges:
        return Components(labels=_in_one_task(e), rounds=0)
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

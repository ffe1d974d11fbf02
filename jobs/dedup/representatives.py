"""Step 7, representatives: each near-duplicate component keeps its first file by the rank
(``jobs.dedup.rank``); every member gets the signatures' estimate of its Jaccard similarity to
that file (± 0.03 at 256 permutations: a member can be below the threshold when it joined through
another member).

``in_one_task`` (the candidates came from one task: the input is small) labels the components and
sorts each by the rank in one task; ``distributed`` takes ``components.distributed``'s labels, a
window per cluster and a join of the representative's signature to every member.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema
from jobs.dedup import components
from jobs.dedup.arrays import signatures
from jobs.dedup.rank import RANK_COLUMNS, arrow_sort_keys, spark_order
from jobs.dedup.verify import with_jaccard
from jobs.pyworker import map_in_arrow
from udfs.minhash import estimated_jaccard

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from jobs.config import DedupSettings

MEMBERS_SCHEMA = "id string, cluster_id string, representative string, jaccard double"
# what ``reps`` (the signed exact-cluster survivors) holds for these steps
REP_COLUMNS = ("id", "signature", "_license_rank", *RANK_COLUMNS[1:])


def _members_batches(num_perm: int, schema: pa.Schema):
    """mapInArrow function for one task: rows that are either an edge (``src``, ``dst``) or a
    file (``REP_COLUMNS``) → ``MEMBERS_SCHEMA`` rows of every file of an edge."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = [b for b in batches if b.num_rows]
        if not batches:  # no signed file (every file an exact duplicate, or without tokens)
            return
        table = pa.Table.from_batches(batches)
        is_edge = pc.is_valid(table.column("src"))
        edges, files = table.filter(is_edge), table.filter(pc.invert(is_edge))
        edges = edges.filter(pc.not_equal(edges.column("src"), edges.column("dst")))
        if edges.num_rows == 0:
            return
        nodes, labels = components.smallest_node_labels(edges.column("src"), edges.column("dst"))
        at = pc.index_in(nodes, value_set=files.column("id"))
        if at.null_count:  # every edge joins two signed files: a broken input
            raise RuntimeError(f"{at.null_count} edge ends have no signature")
        members = files.take(at).append_column("cluster_id", labels)
        members = members.take(pc.sort_indices(
            members, [("cluster_id", "ascending"), *arrow_sort_keys()]))
        cluster = members.column("cluster_id").combine_chunks()
        starts = np.ones(len(cluster), dtype=bool)  # the first row of each cluster: its rep
        starts[1:] = pc.not_equal(cluster[1:], cluster[:-1]).to_numpy(zero_copy_only=False)
        rep = np.maximum.accumulate(np.where(starts, np.arange(len(cluster)), 0))
        sigs = signatures(members.column("signature"), num_perm)
        ids = members.column("id").combine_chunks()
        yield pa.RecordBatch.from_arrays(
            [ids, cluster, ids.take(pa.array(rep)),
             pa.array(estimated_jaccard(sigs, sigs[rep]), pa.float64())], schema=schema)

    return run


def in_one_task(edges: DataFrame, reps: DataFrame, d: DedupSettings) -> DataFrame:
    """``MEMBERS_SCHEMA`` rows from one task, which receives the edges and every signed file."""
    from pyspark.sql import functions as F

    files = reps.select(*REP_COLUMNS, F.lit(None).cast("string").alias("src"),
                        F.lit(None).cast("string").alias("dst"))
    edges = edges.select(*[F.lit(None).cast(files.schema[c].dataType).alias(c)
                           for c in REP_COLUMNS], "src", "dst")
    return map_in_arrow(files.unionByName(edges).repartition(1),
                        _members_batches(d.num_perm, arrow_schema(MEMBERS_SCHEMA)), MEMBERS_SCHEMA)


def distributed(edges: DataFrame, reps: DataFrame, d: DedupSettings) -> tuple[DataFrame, int]:
    """``MEMBERS_SCHEMA`` rows with the DataFrame API, and the components' rounds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    found = components.distributed(edges, d.max_rounds)
    members = found.labels.join(reps, found.labels["node"] == reps["id"]).select(
        "id", F.col("component").alias("cluster_id"), F.col("signature").alias("a"),
        *REP_COLUMNS[2:])
    by_cluster = Window.partitionBy("cluster_id").orderBy(*spark_order())
    members = members.withColumn("representative", F.first("id").over(by_cluster))
    rep_side = members.where(F.col("id") == F.col("representative")).select(
        "cluster_id", F.col("a").alias("b"))
    pairs = members.join(rep_side, "cluster_id")
    return (with_jaccard(pairs, d, "signature", ("id", "cluster_id", "representative"),
                         "id string, cluster_id string, representative string"),
            found.rounds)


def near_clusters(members: DataFrame) -> DataFrame:
    """silver.dup_clusters rows of the near clusters: max/min Jaccard of the members to the
    representative."""
    from pyspark.sql import functions as F

    others = F.when(F.col("id") != F.col("representative"), F.col("jaccard"))
    return (members.groupBy("cluster_id")
            .agg(F.min("representative").alias("representative"),
                 F.sort_array(F.collect_list("id")).alias("members"),
                 F.count(F.lit(1)).alias("size"),
                 F.max(others).alias("max_jaccard"), F.min(others).alias("min_jaccard"))
            .select(F.lit("near").alias("kind"), "cluster_id", "representative", "members", "size",
                    "max_jaccard", "min_jaccard"))

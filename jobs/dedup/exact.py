"""Step 2, exact: files with one content hash form an exact cluster; each keeps its first file
by the rank (``jobs.dedup.rank``), the others are ``exact_duplicate``. Copies of one id (the same
repo, path and content ingested twice) are ranked among themselves first, and ``_copies`` tells
the join back how many there were."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.dedup.rank import license_rank, spark_order

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def rank_exact(signed: DataFrame) -> DataFrame:
    """The signed rows, one per id, with ``_license_rank``, ``_copies`` (rows of that id),
    ``_exact_rn`` (1 for the file its exact cluster keeps), ``_exact_rep`` (that file's id) and
    ``_exact_size`` (the cluster's rows); checkpointed, since every later step reads it. A file
    whose hashing raised is a cluster of its own."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    group = F.coalesce("content_hash", F.concat(F.lit("error:"), "id"))
    # Copies of one id have one text (the id hashes it), so one content hash: after one shuffle by
    # the hash both windows below find their rows in place (a window by id alone shuffled again).
    signed = signed.withColumn("_group", group).repartition("_group")
    same_id = Window.partitionBy("_group", "id")
    narrow = (signed.withColumn("_license_rank", license_rank())
              .withColumn("_copies", F.count(F.lit(1)).over(same_id))
              .withColumn("_copy", F.row_number().over(same_id.orderBy(*spark_order())))
              .where(F.col("_copy") == 1))
    exact = Window.partitionBy("_group").orderBy(*spark_order())
    return (narrow.withColumn("_exact_rn", F.row_number().over(exact))
            .withColumn("_exact_rep", F.first("id").over(exact))
            .withColumn("_exact_size", F.sum("_copies").over(Window.partitionBy("_group")))
            .localCheckpoint(eager=True))


def exact_clusters(ranked: DataFrame) -> DataFrame:
    """silver.dup_clusters rows of the exact clusters of two or more files (an id ingested twice
    is listed twice)."""
    from pyspark.sql import functions as F

    return (ranked.where((F.col("_exact_size") > 1) & F.col("_error").isNull())
            .groupBy(F.col("content_hash").alias("cluster_id"))
            .agg(F.min("_exact_rep").alias("representative"),
                 F.sort_array(F.flatten(F.collect_list(F.array_repeat(
                     "id", F.col("_copies").cast("int"))))).alias("members"),
                 F.sum("_copies").alias("size"))
            .select(F.lit("exact").alias("kind"), "cluster_id", "representative", "members",
                    "size", F.lit(1.0).alias("max_jaccard"), F.lit(1.0).alias("min_jaccard")))

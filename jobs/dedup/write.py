"""Step 8, write: the decisions joined back to the full rows (each file kept, dropped as
``exact_duplicate``/``near_duplicate`` with its cluster in ``detail``, or quarantined), and
silver.unique_files written from them.

Every file's id is in the decisions. Broadcasting them (up to ``tuning.broadcast_rows``) reads the
text once per write and never shuffles it; a shuffle join moves every file's text. With
``tuning.direct_writes`` (and direct reads), silver.unique_files is written by the Python tasks
from silver.files' own Parquet files and committed with delta-rs (``write_unique_files``); why:
Spark's write decodes the text into rows and encodes it again, after Delta's preparation of the
overwrite, where pyarrow reads and writes the same Parquet in a fraction of the CPU time
(bench/RESULTS.md, "Dedup's second paths").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.dedup.rank import license_rank, spark_order
from jobs.direct_io import WRITTEN_SCHEMA, map_parquet_in_arrow, parquet_file_writer
from jobs.stage import DROPPED, KEPT, QUARANTINED

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from jobs.config import DedupTuning
    from jobs.lakehouse import Lakehouse


def decisions(ranked: DataFrame, near: DataFrame) -> DataFrame:
    """One row per distinct file id: content_hash, _copies, _outcome, _reason, detail (JSON of
    the file's cluster: kind, cluster id, representative, and for near clusters the Jaccard)."""
    from pyspark.sql import functions as F

    quarantined = F.col("_error").isNotNull()
    exact_dup = F.col("_exact_rn") > 1
    near_dup = F.col("representative").isNotNull() & (F.col("representative") != F.col("id"))
    return ranked.join(near, "id", "left").select(
        "id", "content_hash", "_copies",
        F.when(quarantined, QUARANTINED).when(exact_dup | near_dup, DROPPED).otherwise(KEPT)
        .alias("_outcome"),
        F.when(quarantined, F.col("_error")).when(exact_dup, "exact_duplicate")
        .when(near_dup, "near_duplicate").alias("_reason"),
        F.when(exact_dup, F.to_json(F.struct(
            F.lit("exact").alias("kind"), F.col("content_hash").alias("cluster_id"),
            F.col("_exact_rep").alias("representative"))))
        .when(near_dup, F.to_json(F.struct(
            F.lit("near").alias("kind"), "cluster_id", "representative",
            F.round("jaccard", 4).alias("jaccard"))))
        .alias("detail"),
    ).localCheckpoint(eager=True)


def joined_back(files: DataFrame, decided: DataFrame,
                t: DedupTuning) -> tuple[DataFrame, int, bool]:
    """``files``' rows with their decision: (rows, distinct ids, whether an id came twice).
    Extra copies of one id (rare) are told apart by the rank, in a window over just those rows;
    the first copy takes the id's decision, the others are ``exact_duplicate``s of it."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    with_copies = F.col("_copies") > 1
    ids, copied = decided.agg(F.count(F.lit(1)), F.count(F.when(with_copies, 1))).first()
    if ids <= t.broadcast_rows:
        single = files.join(F.broadcast(decided.where(~with_copies)), "id")
        copies = files.join(F.broadcast(decided.where(with_copies)), "id")
    else:
        joined = files.join(decided, "id")
        single, copies = joined.where(~with_copies), joined.where(with_copies)
    if not copied:  # the usual case: that branch would scan the files once more per write
        return single, ids, False
    copies = copies.withColumn(
        "_copy", F.row_number().over(Window.partitionBy("id").orderBy(
            license_rank().asc(), *spark_order()[1:])))
    extra = F.col("_copy") > 1
    copies = copies.select(
        *[c for c in single.columns if c not in ("_outcome", "_reason", "detail")],
        F.when(extra, F.lit(DROPPED)).otherwise(F.col("_outcome")).alias("_outcome"),
        F.when(extra, F.lit("exact_duplicate")).otherwise(F.col("_reason")).alias("_reason"),
        F.when(extra, F.to_json(F.struct(
            F.lit("exact").alias("kind"), F.col("content_hash").alias("cluster_id"),
            F.col("id").alias("representative")))).otherwise(F.col("detail")).alias("detail"))
    return single.unionByName(copies), ids, True


def write_unique_files(decided: DataFrame, tasks: list[list[str]], files_schema,
                       lake: Lakehouse, table: str, kept: DataFrame) -> int:
    """Write silver.unique_files from the Python tasks: each task reads its share of
    silver.files' Parquet files (the ones the signing pass read), keeps the rows of the kept ids
    with their content hash (broadcast: one row per kept id), and writes them as Parquet into the
    table's directory (``jobs.direct_io.parquet_file_writer``); the driver commits those files as
    the table's new version (``Lakehouse.overwrite_files``), after checking that they hold one row
    per kept id. ``kept`` is the same rows as Spark would write them: used instead when the table
    does not allow it (``Lakehouse.local_table``: not created yet, another schema, a table
    feature)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    target = lake.local_table(table, kept.schema)
    if target is None:
        return lake.write(table, kept)
    directory, stats_columns = target
    spark = kept.sparkSession
    keep = decided.where(F.col("_outcome") == KEPT).select("id", "content_hash").toArrow()
    shared = spark.sparkContext.broadcast(keep)
    schema = to_arrow_schema(kept.schema)

    def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
        kept_ids = shared.value
        found = pc.index_in(batch.column("id"), value_set=kept_ids.column("id"))
        rows = pc.indices_nonzero(found.is_valid())
        hashes = kept_ids.column("content_hash").take(found.take(rows))
        picked = batch.take(rows)
        return pa.RecordBatch.from_arrays(
            [hashes.combine_chunks() if f.name == "content_hash" else picked.column(f.name)
             for f in schema], schema=schema)

    try:
        written = map_parquet_in_arrow(
            spark, tasks, files_schema,
            parquet_file_writer(directory, schema, stats_columns, transform),
            WRITTEN_SCHEMA).collect()
        return lake.overwrite_files(table, [r.asDict() for r in written], keep.num_rows)
    finally:
        shared.destroy()

"""The dedup stage's spine: the steps of ``jobs.dedup`` in order, and what it writes."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from jobs.arrow import local_frame
from jobs.dedup import candidates, representatives, verify
from jobs.dedup.exact import exact_clusters, rank_exact
from jobs.dedup.representatives import MEMBERS_SCHEMA, REP_COLUMNS, near_clusters
from jobs.dedup.sign import INPUT_COLUMNS, sign
from jobs.dedup.write import decisions, joined_back, write_unique_files
from jobs.direct_io import local_parquet_files, parquet_tasks
from jobs.lakehouse import Lakehouse
from jobs.stage import QUARANTINED, Stage, StageResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.config import DedupSettings, PipelineConfig

STAGE_NAME = "dedup"


def near_duplicates(reps: DataFrame, files: DataFrame, d: DedupSettings,
                    tasks: list[list[str]] | None = None) -> tuple[DataFrame, int]:
    """Steps 3–6 on the exact survivors with a signature (``reps``: ``REP_COLUMNS``):
    ``MEMBERS_SCHEMA`` rows of every file in a near-duplicate cluster, and the components' rounds
    (0 in one task). ``files``: the stage's input with the text, read again only for exact
    verification near the threshold (``tasks``: its own Parquet files). Up to
    ``tuning.one_task_files`` signatures, each step runs in one task; both ways give the same rows.
    """
    one_task = 0 < d.tuning.one_task_files and reps.count() <= d.tuning.one_task_files
    if one_task:
        scored = candidates.in_one_task(reps, d)  # the estimates come with the pairs
        edges = scored.select("src", "dst")
    else:
        edges = candidates.distributed(reps, d)
        scored = None
    if d.verify != "none":
        if scored is None:
            scored = verify.estimated(edges, reps, d)
        edges = verify.verified(scored, files, d, one_task, tasks)
    if one_task:
        return representatives.in_one_task(edges, reps, d), 0
    return representatives.distributed(edges, reps, d)


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark.sql import functions as F

    d, t = cfg.dedup, cfg.dedup.tuning
    files = inputs["silver.files"].select(*INPUT_COLUMNS)
    in_tasks = local_parquet_files(files) if t.direct_reads else None
    tasks = parquet_tasks(spark, in_tasks) if in_tasks else None
    ranked = rank_exact(sign(spark, files, d, tasks))
    if d.near:
        survivors = ranked.where((F.col("_exact_rn") == 1) & F.col("_error").isNull()
                                 & F.col("signature").isNotNull())
        near, _rounds = near_duplicates(survivors.select(*REP_COLUMNS), files, d, tasks)
        near = near.localCheckpoint(eager=True)
    else:
        near = local_frame(spark, [], MEMBERS_SCHEMA)
    decided = decisions(ranked, near)
    clusters = exact_clusters(ranked).unionByName(near_clusters(near))
    rows, ids, any_copies = joined_back(files, decided, t)
    quarantined = F.col("_outcome") == QUARANTINED
    rows = rows.select(
        *INPUT_COLUMNS, "content_hash", "_outcome", "_reason", "detail",
        F.when(quarantined, F.lit("silver.files")).alias("source_kind"),
        F.when(quarantined, F.concat_ws("/", "repo", "path")).alias("source"),
        F.when(quarantined, F.substring("text", 1, cfg.ingest.quarantine_payload_chars))
        .alias("payload"),
        F.col("size_bytes").alias("_bytes"))
    writers = {}
    if t.direct_writes:
        # the small tables too: Spark's Delta overwrite has a fixed cost that the output's write
        # tasks made wait (``Lakehouse.write_by_tasks``); the rejects carry no text by default
        writers["silver.dup_clusters"] = Lakehouse.write_by_tasks
        if not d.rejects_text:
            writers["silver.rejects"] = partial(Lakehouse.write_by_tasks,
                                                slice_=("stage", STAGE_NAME))
        if tasks and not any_copies and ids <= t.broadcast_rows:
            writers["silver.unique_files"] = partial(write_unique_files, decided, tasks,
                                                     files.schema)
    return StageResult(
        input_rows=files.select(F.col("size_bytes").alias("_bytes")),
        decided=rows,
        kept_columns=INPUT_COLUMNS + ("content_hash",),
        extra_outputs={"silver.dup_clusters": clusters},
        rejects_omit=() if d.rejects_text else ("text",),
        writers=writers,
    )


STAGE = Stage(
    name=STAGE_NAME, inputs=("silver.files",), output="silver.unique_files", build=build,
    description="exact content-hash and MinHash-LSH near-duplicate removal",
)

"""Stage ``split``: silver.unique_files → gold.samples (+ gold.sample_skips, silver.rejects,
ops.quarantine).

Every file is split on the executors, one Arrow batch at a time, by ``udfs.split.split_file``
(which states the sample types, limits and the fallback). The ledger counts *files*: a file that
yields samples is ``kept`` (its samples go to gold.samples; the ledger's ``output_rows`` counts
them), a file that yields none is dropped as ``unsplittable`` or ``no_samples``, and a file the
parser refuses (too large, too deep, too slow) or whose split raised is quarantined with the reason.
Every candidate sample that was skipped (too long, over the per-file cap, …) is a row of
gold.sample_skips with its reason, so nothing disappears unexplained.

Repository-level FIM: a share ``split.repo_fim_rate`` of FIM samples (chosen by a hash of the
sample id) become ``fim_repo`` samples whose ``rendered`` text puts up to ``repo_context_files``
other files of the same repository (the ones just before it by path, within
``repo_context_bytes``) in front, in Qwen2.5-Coder's ``<|repo_name|>`` / ``<|file_sep|>`` form
(``udfs.fim.render_repo_fim``).

**Decontamination** comes first: a file that holds a benchmark problem or its solution
(``udfs.decontam``, settings under ``decontam:``) is dropped as ``contaminated`` before any sample
is cut from it, with a ``detail`` JSON (benchmark, task id, method, matched text) in its
silver.rejects row. It is part of this stage rather than a stage of its own so that no second
copy of the corpus is written for it and a rerun decides it again from silver.unique_files.

Input: silver.unique_files (dedup's output).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema
from jobs.config import PipelineConfig, SplitSettings
from jobs.pyworker import map_in_arrow
from jobs.stage import (
    DROPPED,
    KEPT,
    QUARANTINED,
    RowBuffer,
    Stage,
    StageResult,
)
from udfs.records import preview
from udfs.split import SplitParams, split_file

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from udfs.decontam import Decontaminator

INPUT_COLUMNS = ("id", "repo", "path", "language", "license", "stars", "text", "size_bytes")

SAMPLE_COLUMNS = (
    "sample_id string, file_id string, repo string, path string, language string, "
    "task_type string, split_method string, symbol string, symbol_kind string, context string, "
    "target string, prefix string, middle string, suffix string, fim_mode string, "
    "rendered string, spans map<string,array<long>>, cut string, parse_status string"
)
SKIP_COLUMNS = ("file_id string, repo string, path string, language string, task_type string, "
                "symbol string, reason string, span_start long, span_end long")
# One Arrow schema for the three kinds of rows the executor function yields.
SPLIT_SCHEMA = (
    "_kind string, id string, repo string, path string, language string, license string, "
    "stars long, text string, size_bytes long, payload string, _outcome string, _reason string, "
    "detail string, samples long, " + ", ".join(
        c for c in SAMPLE_COLUMNS.split(", ")
        if c.split(" ")[0] not in ("file_id", "repo", "path", "language")) + ", "
    "reason string, span_start long, span_end long"
)


def _columns(ddl: str) -> list[str]:
    return [c.split(" ")[0] for c in ddl.split(", ")]


def _split_batches(params: SplitParams, payload_chars: int, schema: pa.Schema,
                   decontaminator: Decontaminator | None = None):
    """mapInArrow function: file rows → one ``file`` row each, plus its ``sample`` and ``skip``
    rows; a contaminated file gets only its ``file`` row."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            buf = RowBuffer(schema)
            emit = buf.emit

            for f in batch.to_pylist():
                base = {"id": f["id"], "repo": f["repo"], "path": f["path"],
                        "language": f["language"]}
                match = decontaminator.check(f["text"] or "") if decontaminator else None
                if match is not None:
                    emit(**{**f, "_kind": "file", "_outcome": DROPPED, "_reason": "contaminated",
                            "detail": match.detail(), "samples": 0})
                    continue
                try:
                    res = split_file(f["text"] or "", f["language"], f["path"] or "", f["id"],
                                     params)
                    error = res.refused
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the job
                    res, error = None, f"split_error: {type(exc).__name__}: {exc}"
                if error is not None:
                    emit(**{**f, "_kind": "file", "text": None, "_outcome": QUARANTINED,
                            "_reason": error, "payload": preview(f["text"], payload_chars),
                            "parse_status": res.parse_status if res else None})
                    continue
                if res.samples:  # kept: the text is not needed again (no reject row)
                    emit(**{**f, "_kind": "file", "text": None, "_outcome": KEPT,
                            "samples": len(res.samples), "parse_status": res.parse_status})
                else:
                    emit(**{**f, "_kind": "file", "_outcome": DROPPED,
                            "_reason": res.drop_reason, "samples": 0,
                            "parse_status": res.parse_status})
                for s in res.samples:
                    emit(**base, **s, _kind="sample", parse_status=res.parse_status)
                for k in res.skipped:
                    emit(**base, _kind="skip", task_type=k["task_type"], symbol=k["symbol"],
                         reason=k["reason"], span_start=k["start"], span_end=k["end"])
            yield buf.batch()

    return run


def _repo_fim(samples: DataFrame, files: DataFrame, settings: SplitSettings) -> DataFrame:
    """Turn the chosen FIM samples into repository-level ``fim_repo`` samples (module docstring)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    k = settings.repo_context_files
    bucket = F.conv(F.substring(F.sha2(F.concat(F.lit("repo_fim:"), "sample_id"), 256), 1, 8),
                    16, 10).cast("long") / float(0xFFFFFFFF)
    chosen = (F.col("task_type") == "fim") & (bucket < settings.repo_fim_rate)
    marked = samples.withColumn("_repo", chosen)
    picked = marked.where("_repo")
    # the k files before each file in its repository (by path), within the byte budget
    order = Window.partitionBy("repo").orderBy("path", "id")
    before = files.select("id", "repo", "path", "size_bytes").select(
        "id", *[F.struct(F.lag("id", i).over(order).alias("id"),
                         F.lag("size_bytes", i).over(order).alias("size"))
                .alias(f"_b{i}") for i in range(1, k + 1)])
    ctx = (picked.select("sample_id", F.col("file_id").alias("id")).distinct()
           .join(before, "id")
           .select("sample_id", F.posexplode(F.array(*[f"_b{i}" for i in range(1, k + 1)]))
                   .alias("pos", "b"))
           .where(F.col("b.id").isNotNull())
           .withColumn("_cum", F.sum("b.size").over(
               Window.partitionBy("sample_id").orderBy("pos")
               .rowsBetween(Window.unboundedPreceding, 0)))
           .where(F.col("_cum") <= settings.repo_context_bytes)
           .join(files.select(F.col("id").alias("ctx_id"), F.col("path").alias("ctx_path"),
                              F.col("text").alias("ctx_text")),
                 F.col("b.id") == F.col("ctx_id"))
           .groupBy("sample_id")
           .agg(F.sort_array(F.collect_list(F.struct(
               (-F.col("pos")).alias("order"), "ctx_path", "ctx_text"))).alias("ctx")))
    block = F.transform("ctx", lambda c: F.concat(
        F.lit("<|file_sep|>"), c["ctx_path"], F.lit("\n"), c["ctx_text"],
        F.when(c["ctx_text"].endswith("\n") | (c["ctx_text"] == ""), F.lit("")).otherwise("\n")))
    rendered = F.concat(F.lit("<|repo_name|>"), F.col("repo"), F.lit("\n"),
                        F.coalesce(F.array_join(block, ""), F.lit("")),
                        F.lit("<|file_sep|>"), F.col("path"), F.lit("\n"), F.col("rendered"))
    repo = (picked.join(ctx, "sample_id", "left")
            .withColumn("rendered", rendered)
            .withColumn("task_type", F.lit("fim_repo")))
    return marked.where(~F.col("_repo")).drop("_repo").unionByName(
        repo.select(*marked.drop("_repo").columns))


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    settings = cfg.split
    files = inputs["silver.unique_files"].select(*INPUT_COLUMNS)
    rows = map_in_arrow(
        files,
        _split_batches(settings.params, cfg.ingest.quarantine_payload_chars,
                       arrow_schema(SPLIT_SCHEMA), cfg.decontam.decontaminator()),
        SPLIT_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    quarantined = F.col("_outcome") == QUARANTINED
    decided = rows.where(F.col("_kind") == "file").select(
        *INPUT_COLUMNS, "_outcome", "_reason", "detail", "parse_status", "samples",
        F.when(quarantined, F.lit("silver.unique_files")).alias("source_kind"),
        F.when(quarantined, F.concat_ws("/", "repo", "path")).alias("source"),
        "payload", F.col("size_bytes").alias("_bytes"))
    samples = rows.where(F.col("_kind") == "sample").select(
        F.col("id").alias("file_id"), *[c for c in _columns(SAMPLE_COLUMNS) if c != "file_id"])
    samples = samples.select(*_columns(SAMPLE_COLUMNS))
    if settings.repo_fim_rate > 0 and "fim" in settings.params.tasks:
        samples = _repo_fim(samples, files, settings)
    skips = rows.where(F.col("_kind") == "skip").select(
        F.col("id").alias("file_id"), *[c for c in _columns(SKIP_COLUMNS) if c != "file_id"])
    return StageResult(
        input_rows=files.select(F.col("size_bytes").alias("_bytes")),
        decided=decided,
        kept_columns=(),
        output=samples,
        persisted=[rows],
        extra_outputs={"gold.sample_skips": skips},
    )


STAGE = Stage(
    name="split", inputs=("silver.unique_files",), output="gold.samples", build=build,
    description="benchmark decontamination, then tree-sitter split into function/class/"
                "docstring completion, FIM and fallback",
)

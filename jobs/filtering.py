"""Stage ``filter``: bronze.files → silver.files (+ silver.rejects, ops.quarantine).

Applies ``udfs.filters`` rules in the order ``filter.params.rules`` lists them; a dropped file
carries the first reason that fired. Rules run in Arrow batches on the executors. A file whose rule
raises is quarantined with the exception instead of failing the job. ``filter.max_samples`` (the
seed's ``--max-samples``) then keeps the files with the N smallest ids (a deterministic sample,
since ids are content hashes) and drops the rest as ``over_max_samples``.

Kept rows carry the quality signals later stages rank by: num_lines, alpha_fraction,
avg_line_length, max_line_length.

Then **redaction** (``filter.redact``, on by default), before dedup so that copies differing
only in a secret collapse: every kept file's secrets and personal data are replaced with typed
placeholders (``udfs.redaction``); silver.files holds the redacted text, its size, and
``redactions`` (count by type), bronze.files the raw text. A file more than
``filter.secrets_max_share`` of whose characters are secrets is dropped as ``mostly_secrets``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema
from jobs.config import PipelineConfig
from jobs.pyworker import map_in_arrow
from jobs.schemas import FILE_COLUMNS, SIGNAL_COLUMNS, SIGNALS
from jobs.stage import (
    DROPPED,
    KEPT,
    QUARANTINED,
    Stage,
    StageResult,
)
from udfs.filters import Doc, FilterParams, first_reason, quality_signals
from udfs.records import preview
from udfs.redaction import find_secrets, redact, secret_share

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

REDACTIONS = "redactions map<string,int>"
DECIDED_SCHEMA = (
    "id string, repo string, path string, language string, license string, stars long, "
    f"text string, size_bytes long, {SIGNALS}, {REDACTIONS}, payload string, _outcome string, "
    "_reason string"
)


def _redacted(row: dict, max_share: float) -> str | None:
    """Redact a kept row in place; the drop reason when it is mostly secrets (its silver.rejects
    row then holds the redacted text too)."""
    text = row["text"] or ""
    findings = find_secrets(text)
    row["redactions"] = {}
    if findings:
        row["text"], row["redactions"] = redact(text)
        row["size_bytes"] = len(row["text"].encode("utf-8"))
        if secret_share(text, findings) > max_share:
            return "mostly_secrets"
    return None


def _decide(params: FilterParams, payload_chars: int, schema: pa.Schema,
            redact_max_share: float | None = None):
    """mapInArrow function: bronze rows → the same rows with signals, outcome and reason, kept
    rows redacted unless ``redact_max_share`` is None."""
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            out = []
            for row in batch.to_pylist():
                doc = Doc(text=row["text"] or "", language=row["language"], license=row["license"],
                          stars=row["stars"], path=row["path"] or "")
                try:
                    reason = first_reason(doc, params)
                    row.update(quality_signals(doc))
                    if reason is None and redact_max_share is not None:
                        reason = _redacted(row, redact_max_share)
                    row["_outcome"], row["_reason"] = (DROPPED, reason) if reason else (KEPT, None)
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the job
                    row["payload"] = preview(row["text"], payload_chars)
                    row["_outcome"] = QUARANTINED
                    row["_reason"] = f"rule_error: {type(exc).__name__}: {exc}"
                out.append(row)
            yield pa.RecordBatch.from_pylist(out, schema=schema)

    return run


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    files = inputs["bronze.files"].select(*FILE_COLUMNS)
    decided = map_in_arrow(
        files,
        _decide(cfg.filter.params, cfg.ingest.quarantine_payload_chars,
                arrow_schema(DECIDED_SCHEMA),
                cfg.filter.secrets_max_share if cfg.filter.redact else None),
        DECIDED_SCHEMA)
    persisted = []
    if cfg.filter.max_samples is not None:
        decided = decided.persist(StorageLevel.MEMORY_AND_DISK)  # read twice: sample, then join
        persisted.append(decided)
        chosen = (decided.where(F.col("_outcome") == KEPT).select("id").distinct()
                  .orderBy("id").limit(cfg.filter.max_samples)
                  .select("id", F.lit(True).alias("_chosen")))
        over = (F.col("_outcome") == KEPT) & F.col("_chosen").isNull()
        decided = (decided.join(chosen, "id", "left")
                   .withColumn("_reason", F.when(over, "over_max_samples")
                               .otherwise(F.col("_reason")))
                   .withColumn("_outcome", F.when(over, DROPPED).otherwise(F.col("_outcome")))
                   .drop("_chosen"))
    decided = decided.withColumn("_bytes", F.col("size_bytes")).persist(
        StorageLevel.MEMORY_AND_DISK)
    persisted.append(decided)
    return StageResult(
        input_rows=files.select(F.col("size_bytes").alias("_bytes")),
        decided=decided,
        kept_columns=FILE_COLUMNS + SIGNAL_COLUMNS
        + ("redactions",),
        persisted=persisted,
    )


STAGE = Stage(
    name="filter", inputs=("bronze.files",), output="silver.files", build=build,
    description="quality rules (license, stars, size, lines, alpha, long lines, encoded, "
                "autogen), then secret/PII redaction",
)

"""The contract between a stage and the runner (``jobs.runner``).

A stage turns its inputs into one *decided* DataFrame, one row per input row, with three columns the
runner reads, ``_outcome`` (``kept`` / ``dropped`` / ``quarantined``), ``_reason`` (the drop reason
or the quarantine error) and ``_bytes``, beside the stage's own columns. Its input is counted on its
own (``input_rows``), so a stage that loses or invents rows fails the ledger check instead of
passing it by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobs.schemas import REJECT_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.config import PipelineConfig
    from jobs.lakehouse import Lakehouse

KEPT, DROPPED, QUARANTINED = "kept", "dropped", "quarantined"


@dataclass
class StageResult:
    input_rows: DataFrame  # what the stage read; needs a _bytes column
    decided: DataFrame  # one row per input row: _outcome, _reason, _bytes + the stage's columns
    kept_columns: tuple[str, ...]  # projection of kept rows into the output table
    # the output table's rows when they are not the kept input rows (split: many samples per kept
    # file); the ledger then also records how many rows were written (output_rows)
    output: DataFrame | None = None
    persisted: list[DataFrame] = field(default_factory=list)
    # further tables the stage writes whole (overwrite), e.g. dedup's silver.dup_clusters
    extra_outputs: dict[str, DataFrame] = field(default_factory=dict)
    # silver.rejects columns the stage leaves null (dedup's text: it stays in the stage's input)
    rejects_omit: tuple[str, ...] = ()
    # tables the stage writes itself, each by a function (lakehouse, table, rows) → new version,
    # in place of the runner's ``Lakehouse.write`` of those rows (the output's: the kept rows),
    # which it may still fall back to (dedup's direct writes)
    writers: dict[str, Callable[[Lakehouse, str, DataFrame], int]] = field(default_factory=dict)
    # output rows per source before and after the stage's mixture: (source, rows_in, rows_out)
    by_source: DataFrame | None = None


@dataclass(frozen=True)
class Stage:
    """A registered stage: its inputs and output table, and the function that decides every row."""

    name: str
    inputs: tuple[str, ...]
    output: str
    build: Callable[[SparkSession, PipelineConfig, dict[str, DataFrame]], StageResult]
    description: str = ""
    # tables the stage reads only under some configs (build_sft: silver.commits with git
    # sources); one that does not exist yet is left out with a warning
    inputs_when: Callable[[PipelineConfig], tuple[str, ...]] | None = None

    def inputs_for(self, cfg: PipelineConfig) -> tuple[str, ...]:
        return self.inputs + (self.inputs_when(cfg) if self.inputs_when else ())


class RowBuffer:
    """Rows of one Arrow batch with a fixed schema, added by keyword (missing columns are null).
    For mapInArrow functions that yield several kinds of rows in one schema."""

    def __init__(self, schema):
        self.schema = schema
        self.columns: dict[str, list] = {n: [] for n in schema.names}

    def emit(self, **row) -> None:
        for name, column in self.columns.items():
            column.append(row.get(name))

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def batch(self):
        import pyarrow as pa

        return pa.RecordBatch.from_pydict(self.columns, schema=self.schema)


def with_line_numbers(rows: DataFrame, scanned: DataFrame, file_col: str) -> DataFrame:
    """``rows`` with ``_line``, the 1-based line of each in its file. ``scanned`` holds every
    line of a text scan (``rows`` among them), each with its split's start (``_block``,
    ``_metadata.file_block_start``) and its position in the scan (``_mid``,
    ``monotonically_increasing_id``). A split's lines are consecutive in its scan task, so a
    line's number is the lines of the file's earlier splits plus its position after its split's
    first line: one small aggregate per split, joined to ``rows`` only."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    splits = (scanned.groupBy(file_col, "_block")
              .agg(F.min("_mid").alias("_first"), F.count(F.lit(1)).alias("_lines")))
    earlier = Window.partitionBy(file_col).orderBy("_block").rowsBetween(
        Window.unboundedPreceding, -1)
    splits = splits.withColumn("_before", F.coalesce(F.sum("_lines").over(earlier), F.lit(0)))
    return (rows.join(F.broadcast(splits), [file_col, "_block"])
            .withColumn("_line", F.col("_before") + F.col("_mid") - F.col("_first") + 1)
            .drop("_first", "_lines", "_before"))


def rejects_of(stage: str, decided: DataFrame, omit: tuple[str, ...] = ()) -> DataFrame:
    """Dropped rows in silver.rejects' schema (columns a stage lacks or ``omit``s are null)."""
    from pyspark.sql import functions as F

    cols = set(decided.columns) - set(omit)
    select = [F.lit(stage).alias("stage"), F.col("_reason").alias("reason")]
    for spec in REJECT_SCHEMA.split(", ")[2:]:
        name, kind = spec.split(" ")
        value = F.col(name) if name in cols else F.lit(None)
        select.append(value.cast(kind).alias(name))
    return decided.where(F.col("_outcome") == DROPPED).select(*select)


def quarantine_of(stage: str, decided: DataFrame) -> DataFrame:
    """Quarantined rows in ops.quarantine's schema."""
    from pyspark.sql import functions as F

    cols = set(decided.columns)

    def pick(name: str):
        return (F.col(name) if name in cols else F.lit(None)).cast("string").alias(name)

    return decided.where(F.col("_outcome") == QUARANTINED).select(
        F.lit(stage).alias("stage"), pick("source_kind"), pick("source"), pick("payload"),
        F.col("_reason").alias("error"),
    )

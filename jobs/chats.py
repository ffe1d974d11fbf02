"""Stage ``chats``: chat sources (``ingest.sources: [{kind: chat, path: FILE_OR_DIR}]``) →
silver.chats.

Each file is read whole on an executor (Spark's ``binaryFile``; a file must fit a task's memory,
and Spark reads at most 2 GiB per file), split into records (JSONL lines, or the items of one JSON
array), and each record normalized to ChatML messages, checked and redacted (``udfs.chats``).
A record that is not a conversation is quarantined with ``<file>:<line>`` or ``<file>#item=<n>``;
empty, one-sided and empty-answer conversations are dropped by name, and a conversation whose
normalized messages were seen before (in any file, by ``chat_id``) is ``duplicate_conversation``.
The input rows are the records found: a file's records exist only once it is parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema, local_frame
from jobs.config import ChatSource, PipelineConfig
from jobs.pyworker import map_in_arrow
from jobs.schemas import MESSAGES
from jobs.stage import DROPPED, KEPT, QUARANTINED, RowBuffer, Stage, StageResult

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

DECIDED_SCHEMA = (
    f"id string, path string, format string, messages {MESSAGES}, turns long, "
    "language string, redactions map<string,int>, detail string, source_kind string, "
    "source string, payload string, _file string, _pos long, _outcome string, _reason string, "
    "_bytes long"
)
CHAT_FILES = "*.{jsonl,json,ndjson,JSONL,JSON,NDJSON}"


def _files(spark: SparkSession, src: ChatSource) -> DataFrame:
    from pathlib import Path

    from pyspark.sql import functions as F

    reader = spark.read.format("binaryFile")
    local = "://" not in src.path and not src.path.startswith(("dbfs:", "file:"))
    if not (local and Path(src.path).is_file()):
        reader = reader.option("recursiveFileLookup", "true").option("pathGlobFilter", CHAT_FILES)
    return reader.load(src.path).select("path", "content", F.lit(src.format).alias("format"))


def _decide(redact: bool, payload_chars: int, schema: pa.Schema):
    """mapInArrow function: chat files → one decided row per record."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.chats import (
            ChatError,
            chat_id,
            chat_language,
            normalize,
            problem,
            records_of,
            redact_messages,
        )
        from udfs.records import preview

        for batch in batches:
            buf = RowBuffer(schema)
            for f in batch.to_pylist():
                path = f["path"].removeprefix("file:")
                for pos, (where, text, error) in enumerate(records_of(f["content"], path)):
                    base = {"source_kind": "chat", "source": where, "path": where,
                            "_file": path, "_pos": pos,
                            "_bytes": len(text.encode()) if text else 0}
                    if error:  # a line that is not UTF-8: its locator says where it is
                        buf.emit(**base, _outcome=QUARANTINED, _reason=error)
                        continue
                    try:
                        messages, shape = normalize(text, f["format"])
                        counts = {}
                        if redact:
                            messages, counts = redact_messages(messages)
                        messages, reason = problem(messages)
                        cid = chat_id(messages)
                    except ChatError as exc:
                        buf.emit(**base, _outcome=QUARANTINED, _reason=str(exc)[:500],
                                 payload=preview(text, payload_chars))
                        continue
                    except Exception as exc:  # noqa: BLE001 - one bad record must not stop it
                        buf.emit(**base, _outcome=QUARANTINED,
                                 _reason=f"chat_error: {type(exc).__name__}: {exc}"[:500],
                                 payload=preview(text, payload_chars))
                        continue
                    if reason:
                        buf.emit(**base, id=cid, format=shape, _outcome=DROPPED, _reason=reason,
                                 turns=len(messages))
                        continue
                    buf.emit(**base, id=cid, format=shape, messages=messages,
                             turns=len(messages), language=chat_language(messages),
                             redactions=counts, _outcome=KEPT)
            yield buf.batch()

    return run


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    parts = [_files(spark, src) for src in cfg.ingest.of(ChatSource)]
    schema = arrow_schema(DECIDED_SCHEMA)
    if parts:
        files = parts[0]
        for p in parts[1:]:
            files = files.unionByName(p)
        decided = map_in_arrow(files, _decide(cfg.chats.redact,
                                              cfg.ingest.quarantine_payload_chars, schema),
                               DECIDED_SCHEMA)
    else:
        decided = local_frame(spark, [], DECIDED_SCHEMA)
    kept = F.col("_outcome") == KEPT
    order = Window.partitionBy("id").orderBy("_file", "_pos")
    first = F.first("source").over(order)
    repeat = kept & (F.row_number().over(order) > 1)
    decided = (decided.withColumn("_repeat", repeat).withColumn("_first", first)
               .withColumn("_outcome", F.when(F.col("_repeat"), DROPPED)
                           .otherwise(F.col("_outcome")))
               .withColumn("_reason", F.when(F.col("_repeat"), "duplicate_conversation")
                           .otherwise(F.col("_reason")))
               .withColumn("detail", F.when(F.col("_repeat"), F.concat(
                   F.lit("first seen at "), F.col("_first"))))
               .drop("_repeat", "_first")
               .persist(StorageLevel.MEMORY_AND_DISK))
    output = decided.where(kept).select(
        F.col("id").alias("chat_id"), "source", "format", F.col("messages").cast(MESSAGES),
        "turns", "language", "redactions")
    return StageResult(input_rows=decided.select("_bytes"), decided=decided, kept_columns=(),
                       output=output, persisted=[decided])


STAGE = Stage(
    name="chats", inputs=(), output="silver.chats", build=build,
    description="chat exports (OpenAI messages, ShareGPT) → ChatML, checked, redacted, deduped",
)

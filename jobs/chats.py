"""Stage ``chats``: chat sources (``ingest.sources: [{kind: chat, path: FILE_OR_DIR}]``) →
silver.chats.

A file of up to ``chats.whole_file_bytes`` is read whole on an executor (Spark's ``binaryFile``)
and split into records: JSONL lines, the items of one JSON array, or one JSON document. A larger
file is never held whole: a JSON array (its first character is ``[``) is read item by item in one
task (``udfs.chats.array_items`` over the file's stream, so executors must reach the path, as
for tree and git sources), and anything else as JSONL, line by line across tasks (Spark's text
source). A compressed file (``udfs.records.COMPRESSION``) is decompressed by a task of its
own and read in the same ways (``_decide_file``). Each record is normalized to ChatML
messages, checked and redacted (``udfs.chats``).
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
from jobs.source_files import NOT_UTF8, file_name, glob_escaped, reader, unopenable
from jobs.stage import (
    DROPPED,
    KEPT,
    QUARANTINED,
    RowBuffer,
    Stage,
    StageResult,
    with_line_numbers,
)
from udfs.records import COMPRESSION, compression_of

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

DECIDED_SCHEMA = (
    f"id string, path string, format string, messages {MESSAGES}, turns long, "
    "language string, redactions map<string,int>, detail string, source_kind string, "
    "source string, payload string, _file string, _pos long, _block long, _mid long, "
    "_outcome string, _reason string, _bytes long"
)
CHAT_SUFFIXES = tuple(f"{kind}{packed}" for kind in (".jsonl", ".json", ".ndjson")
                      for packed in ("", *COMPRESSION))
# CHAT_SUFFIXES as a Hadoop glob
CHAT_FILES = ("*.{jsonl,json,ndjson,JSONL,JSON,NDJSON}{,"
              + ",".join(f"{c},{c.upper()}" for c in COMPRESSION) + "}")
BLANK = "_blank"  # a streamed file's empty line: numbered with the others, then left out


def _listing(spark: SparkSession, src: ChatSource) -> list[tuple[str, int]]:
    """(path, bytes) of the source's chat files; no content is read."""
    from pathlib import Path

    files = reader(spark).format("binaryFile")
    local = "://" not in src.path and not src.path.startswith(("dbfs:", "file:"))
    if not (local and Path(src.path).is_file()):
        files = files.option("recursiveFileLookup", "true").option("pathGlobFilter", CHAT_FILES)
    return [(r.path, r.length) for r in files.load(src.path).select("path", "length").collect()]


def open_stream(uri: str):
    """A binary stream of a file named as Spark names it: ``file:`` and ``dbfs:`` paths through
    the local (or /dbfs fuse) file system, other schemes through pyarrow's file systems."""
    from udfs.records import compression_of, decompressed

    codec = compression_of(uri)
    if uri.startswith("file:"):
        raw = open("/" + uri.removeprefix("file:").lstrip("/"), "rb")
    elif uri.startswith("dbfs:"):
        raw = open("/dbfs/" + uri.removeprefix("dbfs:").lstrip("/"), "rb")
    elif "://" not in uri:
        raw = open(uri, "rb")
    else:
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri.replace("s3a://", "s3://", 1))
        raw = filesystem.open_input_stream(path)
    return decompressed(raw, codec) if codec else raw


class _Replayed:
    """A stream's first bytes, already read, then the rest of it."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n < 0:
            out, self.head = self.head + self.stream.read(), b""
        else:
            out, self.head = self.head[:n], self.head[n:]
        return out


def is_json_array(uri: str) -> bool:
    """Whether the file's first character (after a BOM and blanks) is ``[``; a file that cannot
    be opened here is left to Spark's reader (JSONL), which reports it."""
    try:
        with open_stream(uri) as f:
            head = f.read(65536)
    except OSError:
        return False
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"["


def _whole(spark: SparkSession, paths: list[str], fmt: str) -> DataFrame:
    """Files read whole, one row each: a JSON array or document, or JSONL."""
    from pyspark.sql import functions as F

    return (reader(spark).format("binaryFile").load([glob_escaped(p) for p in paths])
            .select("path", "content", F.lit(fmt).alias("format")))


def _streamed(spark: SparkSession, paths: list[str], fmt: str) -> DataFrame:
    """Files over ``chats.whole_file_bytes`` as JSONL lines, split across tasks like any text
    file, so a file of any size is read in bounded memory. Each line keeps its split's start and
    its position in the scan, from which ``_number_lines`` gives its line number."""
    from pyspark.sql import functions as F

    return reader(spark).text([glob_escaped(p) for p in paths]).select(
        F.col("value").cast("binary").alias("line"), file_name().alias("path"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_mid"), F.lit(fmt).alias("format"))


def _decider(redact: bool, payload_chars: int):
    """``decide(buf, base, text, fmt)``: one record's row (kept, dropped or quarantined)."""
    from udfs.chats import (
        ChatError,
        chat_id,
        chat_language,
        normalize,
        problem,
        redact_messages,
    )
    from udfs.records import preview

    def decide(buf: RowBuffer, base: dict, text: str, fmt: str) -> None:
        try:
            messages, shape = normalize(text, fmt)
            counts = {}
            if redact:
                messages, counts = redact_messages(messages)
            messages, reason = problem(messages)
            cid = chat_id(messages)
        except ChatError as exc:
            buf.emit(**base, _outcome=QUARANTINED, _reason=str(exc)[:500],
                     payload=preview(text, payload_chars))
            return
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop it
            buf.emit(**base, _outcome=QUARANTINED,
                     _reason=f"chat_error: {type(exc).__name__}: {exc}"[:500],
                     payload=preview(text, payload_chars))
            return
        if reason:
            buf.emit(**base, id=cid, format=shape, _outcome=DROPPED, _reason=reason,
                     turns=len(messages))
            return
        buf.emit(**base, id=cid, format=shape, messages=messages, turns=len(messages),
                 language=chat_language(messages), redactions=counts, _outcome=KEPT)

    return decide


def _record(buf: RowBuffer, decide, where: str, path: str, pos: int, text: str | None,
            error: str | None, fmt: str) -> None:
    """One record of a file read in Python: its error (a line that is not UTF-8) quarantined
    at its locator, else decided."""
    base = {"source_kind": "chat", "source": where, "path": where, "_file": path, "_pos": pos,
            "_bytes": len(text.encode()) if text else 0}
    if error:
        buf.emit(**base, _outcome=QUARANTINED, _reason=error)
    else:
        decide(buf, base, text, fmt)


def _decide(redact: bool, payload_chars: int, schema: pa.Schema):
    """mapInArrow function: whole chat files → one decided row per record."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.chats import records_of

        decide = _decider(redact, payload_chars)
        for batch in batches:
            buf = RowBuffer(schema)
            for f in batch.to_pylist():
                path = f["path"].removeprefix("file:")
                for pos, (where, text, error) in enumerate(records_of(f["content"], path)):
                    _record(buf, decide, where, path, pos, text, error, f["format"])
            yield buf.batch()

    return run


def _decide_file(redact: bool, payload_chars: int, schema: pa.Schema, limit: int):
    """mapInArrow function: chat files read in Python, one per task (compressed ones, and JSON
    arrays over ``limit``) → one decided row per record. Decompressed, a file of up to ``limit``
    bytes is read as a whole file is (``records_of``); a larger one as a stream, so a file of any
    size is read in bounded memory: a JSON array item by item (``udfs.chats.array_items``),
    anything else line by line. A file that breaks off keeps the records before and is
    quarantined where the next one would be: ``invalid_json`` where its JSON breaks,
    ``corrupt_file`` where it cannot be read or decompressed."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import json

        from udfs.chats import array_items, decode_line, record_text, records_of
        from udfs.records import lines_of

        decide = _decider(redact, payload_chars)
        bom = b"\xef\xbb\xbf"

        def records(stream, path: str, at: list[str]):
            """(locator, position, text, error) of each record; ``at[0]``: the next locator."""
            head = stream.read(limit + 1)
            if len(head) <= limit:
                for pos, (where, text, error) in enumerate(records_of(head, path)):
                    yield where, pos, text, error
            elif head.removeprefix(bom).lstrip()[:1] == b"[":
                at[0] = f"{path}#item=0"
                for pos, item in enumerate(array_items(_Replayed(head, stream))):
                    at[0] = f"{path}#item={pos + 1}"
                    yield f"{path}#item={pos}", pos, record_text(item), None
            else:
                for line, raw in enumerate(lines_of(_Replayed(head, stream)), start=1):
                    at[0] = f"{path}:{line + 1}"
                    raw = raw.removeprefix(bom) if line == 1 else raw
                    if raw.strip():
                        yield (f"{path}:{line}", line, *decode_line(raw))

        for batch in batches:
            for f in batch.to_pylist():
                path, buf, at = f["path"].removeprefix("file:"), RowBuffer(schema), [""]
                at[0] = f"{path}:1"
                try:
                    with open_stream(f["path"]) as stream:
                        for where, pos, text, error in records(stream, path, at):
                            _record(buf, decide, where, path, pos, text, error, f["format"])
                            if len(buf) >= 1024:  # bounded batches, whatever the file's size
                                yield buf.batch()
                                buf = RowBuffer(schema)
                except Exception as exc:  # noqa: BLE001 - a broken file must not stop the run
                    # a decode error's position is in the reader's buffer, not the file
                    why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    kind = "invalid_json" if isinstance(exc, ValueError) else "corrupt_file"
                    buf.emit(source_kind="chat", source=at[0], path=at[0], _file=path,
                             _pos=0, _bytes=0, _outcome=QUARANTINED,
                             _reason=f"{kind}: {type(exc).__name__}: {why}"[:500])
                yield buf.batch()

    return run


def _decide_lines(redact: bool, payload_chars: int, schema: pa.Schema):
    """mapInArrow function: streamed lines → one decided row per line (blank lines too, so the
    line numbers count them; ``BLANK`` rows are left out once numbered)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.chats import decode_line

        decide = _decider(redact, payload_chars)
        for batch in batches:
            buf = RowBuffer(schema)
            for r in batch.to_pylist():
                path = r["path"].removeprefix("file:")
                raw = r["line"].removeprefix(b"\xef\xbb\xbf")  # a BOM opens the first line
                base = {"source_kind": "chat", "source": path, "path": path, "_file": path,
                        "_block": r["_block"], "_mid": r["_mid"], "_bytes": len(raw)}
                if not raw.strip():
                    buf.emit(**base, _outcome=BLANK)
                    continue
                text, error = decode_line(raw)
                if error:
                    buf.emit(**base, _outcome=QUARANTINED, _reason=error)
                    continue
                decide(buf, base, text, r["format"])
            yield buf.batch()

    return run


def _number_lines(decided: DataFrame) -> DataFrame:
    """Streamed rows located as ``<file>:<line>`` (``_pos`` = the line), blank lines left out."""
    from pyspark.sql import functions as F

    streamed = decided.where(F.col("_block").isNotNull())
    where = F.concat_ws(":", "_file", F.col("_line").cast("string"))
    numbered = (with_line_numbers(streamed, streamed, "_file")
                .withColumn("source", where).withColumn("path", where)
                .withColumn("_pos", F.col("_line")).select(*decided.columns))
    whole = decided.where(F.col("_block").isNull())
    return whole.unionByName(numbered.where(F.col("_outcome") != BLANK))


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schema = arrow_schema(DECIDED_SCHEMA)
    limit, chars = cfg.chats.whole_file_bytes, cfg.ingest.quarantine_payload_chars
    parts, unopened = [], []
    for src in cfg.ingest.of(ChatSource):
        unopened += [{"source_kind": "chat", "source": name, "path": name, "_file": name,
                      "_pos": 0, "_bytes": 0, "_outcome": QUARANTINED, "_reason": NOT_UTF8}
                     for name in unopenable(src.path, CHAT_SUFFIXES)]
        files = _listing(spark, src)
        packed = [p for p, _ in files if compression_of(p)]
        files = [(p, size) for p, size in files if not compression_of(p)]
        whole = [p for p, size in files if size <= limit]
        arrays = [p for p, size in files if size > limit and is_json_array(p)]
        big = [p for p, size in files if size > limit and p not in arrays]
        if packed or arrays:  # read in Python, a task each
            listed = local_frame(spark, [{"path": p, "format": src.format}
                                         for p in packed + arrays],
                                 "path string, format string").repartition(len(packed + arrays))
            parts.append(map_in_arrow(listed, _decide_file(cfg.chats.redact, chars, schema,
                                                           limit), DECIDED_SCHEMA))
        if whole:
            parts.append(map_in_arrow(_whole(spark, whole, src.format),
                                      _decide(cfg.chats.redact, chars, schema), DECIDED_SCHEMA))
        if big:
            parts.append(map_in_arrow(_streamed(spark, big, src.format),
                                      _decide_lines(cfg.chats.redact, chars, schema),
                                      DECIDED_SCHEMA))
    decided = local_frame(spark, unopened, DECIDED_SCHEMA)
    for p in parts:
        decided = decided.unionByName(p)
    raw = decided.persist(StorageLevel.MEMORY_AND_DISK)
    decided = _number_lines(raw)
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
               .drop("_repeat", "_first", "_block", "_mid")
               .persist(StorageLevel.MEMORY_AND_DISK))
    output = decided.where(kept).select(
        F.col("id").alias("chat_id"), "source", "format", F.col("messages").cast(MESSAGES),
        "turns", "language", "redactions")
    return StageResult(input_rows=decided.select("_bytes"), decided=decided, kept_columns=(),
                       output=output, persisted=[raw, decided])


STAGE = Stage(
    name="chats", inputs=(), output="silver.chats", build=build,
    description="chat exports (OpenAI messages, ShareGPT) → ChatML, checked, redacted, deduped",
)

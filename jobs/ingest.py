"""Stage ``ingest``: sources → bronze.files (+ ops.quarantine).

Sources (``ingest.sources`` in config):

* ``jsonl`` / ``parquet``: Stack-v2-style records with ``text, language, license, stars, path, repo``
  (../shared/seeds/001). Each record is validated field by field (``udfs.records``); a malformed line,
  a missing, mistyped or out-of-range field, text that is not valid Unicode goes to ops.quarantine
  with its raw payload, the error, and where it was: ``<file>:<line>`` (1-based) for JSONL,
  ``<file>#row=<n>`` (0-based, the Parquet file's own row index) for Parquet. A Parquet file that
  cannot be read at all is one quarantine row naming the file (``unreadable_parquet``).
* ``tree``: local source trees and git working copies, walked on the driver (``udfs.trees``),
  contents read and decoded on the executors in Arrow batches. Language from the extension, license
  from the repo's LICENSE/COPYING files or wheel METADATA, ``repo`` = the tree's folder name,
  ``stars`` null. UTF-16 and UTF-32 files are decoded (``udfs.records.decode_source``); invalid
  UTF-8, binary and unreadable files are quarantined with the file's path as ``source``; non-code
  files, VCS internals and links that lead nowhere or out of the tree are dropped with their
  reasons (``udfs.trees``).

Every file gets ``id = sha256(repo NUL path NUL content)`` (``udfs.records.file_id``).
Tree sources must sit on a filesystem every executor mounts (local disk for local runs; NFS, /dbfs or
/Volumes on a cluster).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema, local_frame
from jobs.config import FILE_SOURCES, JsonlSource, ParquetSource, PipelineConfig, TreeSource
from jobs.pyworker import map_in_arrow
from jobs.schemas import FILE_COLUMNS
from jobs.session import default_parallelism
from jobs.source_files import (
    NOT_UTF8,
    file_name,
    glob_escaped,
    is_utf8,
    local_files,
    reader,
    unopenable,
)
from jobs.stage import (
    DROPPED,
    KEPT,
    QUARANTINED,
    Stage,
    StageResult,
    with_line_numbers,
)
from udfs.records import compression_of, decode_source, file_id, parse_stack_line, preview
from udfs.trees import TreeFile, as_text, repo_roots, walk_repo

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

DECIDED_SCHEMA = (
    "id string, repo string, path string, language string, license string, stars long, "
    "text string, size_bytes long, source_kind string, source string, payload string, "
    "_outcome string, _reason string, _bytes long, _block long, _mid long, _row long"
)
# Where a record came from, carried through the executor function: ``_block`` the start of the
# JSONL split it was read from and ``_mid`` its scan position (``_line_numbers`` turns the two into
# a line number), ``_row`` a Parquet file's own row index.
_LOCATORS = ("_block", "_mid", "_row")
# A JSONL or Parquet source's records, before they are checked (``_decide_records``).
_LINES_SCHEMA = "line binary, source string, _error string, _block long, _mid long, _row long"
_DECIDED_NAMES = [spec.split(" ")[0] for spec in DECIDED_SCHEMA.split(", ")]


def _row(**values) -> dict:
    return {name: values.get(name) for name in _DECIDED_NAMES}


def _record_row(raw: bytes | None, source: str, kind: str, payload_chars: int,
                error: str | None = None, columns: dict[str, str] | None = None,
                **where) -> dict:
    """One JSONL line or Parquet row (as JSON, UTF-8 bytes) → its decided row."""
    base = dict(source=source, source_kind=kind, _bytes=len(raw) if raw else 0, **where)
    if error:
        return _row(**base, payload=preview(raw, payload_chars) if raw else None,
                    _outcome=QUARANTINED, _reason=error)
    try:
        # a byte-order mark opens a file written by some Windows tools: not part of the record
        line = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8") if raw is not None else None
    except UnicodeDecodeError as exc:
        return _row(**base, payload=preview(raw, payload_chars), _outcome=QUARANTINED,
                    _reason=f"invalid_utf8: {exc.reason} at byte {exc.start}")
    if line is None or not line.strip():
        return _row(**base, _outcome=DROPPED, _reason="blank_line")
    record, error = parse_stack_line(line, columns)
    if error:
        return _row(**base, payload=preview(line, payload_chars), _outcome=QUARANTINED,
                    _reason=error)
    text = record["text"]
    return _row(
        id=file_id(record["repo"], record["path"], text.encode("utf-8")),
        size_bytes=len(text.encode("utf-8")), **base, _outcome=KEPT, _reason=None,
        **{k: record[k] for k in ("repo", "path", "language", "license", "stars", "text")},
    )


def _decide_records(kind: str, payload_chars: int, schema: pa.Schema,
                    columns: dict[str, str] | None = None):
    """mapInArrow function: (line, source, _error, locators) batches → decided rows."""
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = [_record_row(r["line"], r["source"], kind, payload_chars, r["_error"],
                                columns, **{k: r[k] for k in _LOCATORS})
                    for r in batch.to_pylist()]
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return run


def _decide_tree_files(payload_chars: int, max_bytes: int, schema: pa.Schema):
    """mapInArrow function: listed files → read, decode and identify them on the executor."""
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = []
            for f in batch.to_pylist():
                base = dict(repo=f["repo"], path=f["path"], language=f["language"],
                            license=f["license"], source=f["source"], source_kind="tree",
                            _bytes=f["size"])
                if f["error"]:
                    rows.append(_row(**base, _outcome=QUARANTINED, _reason=f["error"]))
                    continue
                if f["skip"]:
                    rows.append(_row(**base, _outcome=DROPPED, _reason=f["skip"]))
                    continue
                if f["size"] >= max_bytes:
                    rows.append(_row(**base, _outcome=DROPPED, _reason="file_too_large"))
                    continue
                try:
                    with open(f["abspath"], "rb") as fh:
                        content = fh.read()
                except OSError as exc:
                    rows.append(_row(**base, _outcome=QUARANTINED,
                                     _reason=f"unreadable_file: {exc.strerror}"))
                    continue
                text, error = decode_source(content)
                if error:
                    rows.append(_row(**base, payload=preview(content, payload_chars),
                                     _outcome=QUARANTINED, _reason=error))
                    continue
                rows.append(_row(**base, id=file_id(f["repo"], f["path"], content), text=text,
                                 size_bytes=len(content), _outcome=KEPT))
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return run


def _jsonl(spark: SparkSession, src: JsonlSource) -> DataFrame:
    """The source's lines as UTF-8 bytes (so one invalid byte quarantines its line, not the
    batch), each with its file, its split's start and its position in the scan.

    A local source is listed here: plain files are read by Spark's text source (split across
    tasks), compressed ones (``udfs.records.COMPRESSION``) by ``_compressed`` (a task each),
    and names Spark cannot open are quarantined. A remote source is Spark's to list and read.
    """
    from pyspark.sql import functions as F

    def text(paths) -> DataFrame:
        return reader(spark, src.path).text(paths).select(
            F.col("value").cast("binary").alias("line"), file_name().alias("source"),
            F.lit(None).cast("string").alias("_error"),
            F.col("_metadata.file_block_start").alias("_block"),
            F.monotonically_increasing_id().alias("_mid"), F.lit(None).cast("long").alias("_row"))

    files = local_files(src.path)
    if files is None:
        return text(src.path)
    names = [os.fsdecode(f) for f in files]
    plain = [n for n in names if is_utf8(n) and not compression_of(n)]
    packed = [n for n in names if is_utf8(n) and compression_of(n)]
    parts = [local_frame(spark, [{"source": f"file:{as_text(n)}", "_error": NOT_UTF8}
                                 for n in names if not is_utf8(n)], _LINES_SCHEMA)]
    if plain:
        parts.append(text([glob_escaped(n) for n in plain]))
    if packed:
        listed = local_frame(spark, [{"path": n} for n in packed], "path string")
        parts.append(map_in_arrow(listed.repartition(len(packed)),
                                  _compressed(arrow_schema(_LINES_SCHEMA)), _LINES_SCHEMA))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def _compressed(schema: pa.Schema):
    """mapInArrow function: compressed JSONL files (one per task) → their lines, numbered as
    the text source's are (one split at 0, the line's index as its scan position). A file that
    cannot be opened, or breaks off, keeps the lines before and is quarantined at the next line
    (``corrupt_file``); lines in the codec's last buffer before a break may not be recovered."""
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.records import compressed_lines

        for batch in batches:
            for path in batch.column("path").to_pylist():
                rows, n = [], 0
                source = f"file:{path}"
                try:
                    for line in compressed_lines(path):
                        rows.append({"line": line, "source": source, "_block": 0, "_mid": n})
                        n += 1
                        if len(rows) >= 4096:  # bounded batches, whatever the file's size
                            yield pa.RecordBatch.from_pylist(rows, schema=schema)
                            rows = []
                except (OSError, EOFError, ValueError) as exc:
                    rows.append({"source": source, "_block": 0, "_mid": n,
                                 "_error": f"corrupt_file: {type(exc).__name__}: {exc} "
                                           f"(after line {n})"[:500]})
                yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return run


def _with_unopenable(spark: SparkSession, lines: DataFrame, path: str) -> DataFrame:
    """``lines`` and a quarantine row for each file Spark cannot open (``jobs.source_files``),
    named as Spark names the others (``file:<path>``)."""
    rows = [{"source": f"file:{name}", "_error": NOT_UTF8} for name in unopenable(path)]
    return lines.unionByName(local_frame(spark, rows, _LINES_SCHEMA)) if rows else lines


def _parquet(spark: SparkSession, src: ParquetSource) -> DataFrame:
    """Parquet rows as JSON lines, so they pass the same field checks as JSONL.

    Read as one dataset when the files' schemas merge (``mergeSchema`` reads every footer up front,
    so a clash fails here rather than halfway through the job); otherwise file by file, where
    each file's rows are checked field by field and an unreadable file becomes a single row that
    names it, with the reader's error.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType, DoubleType, FloatType

    unreadable = (PySparkException, Py4JJavaError)  # a bad footer surfaces as either

    def as_lines(df: DataFrame) -> DataFrame:
        # A binary column (code stored as bytes) would reach JSON as base64 and be kept as that
        # text: its bytes are read as UTF-8 instead, and a row whose bytes are not UTF-8 is
        # quarantined, as a tree's file is.
        binary = [f.name for f in df.schema.fields if isinstance(f.dataType, BinaryType)]
        # to_json writes NaN as the string "NaN"; pandas writes a missing integer as NaN
        floats = [f.name for f in df.schema.fields
                  if isinstance(f.dataType, (DoubleType, FloatType))]
        fields = [df[n].cast("string").alias(n) if n in binary else
                  F.nanvl(df[n], F.lit(None)).alias(n) if n in floats else df[n]
                  for n in df.columns]
        invalid = [F.when(~F.is_valid_utf8(df[n].cast("string")),
                          F.lit(f"invalid_utf8: column {n} is not UTF-8")) for n in binary]
        error = F.coalesce(*invalid) if invalid else F.lit(None).cast("string")
        return df.select(F.encode(F.to_json(F.struct(*fields)), "UTF-8").alias("line"),
                         file_name().alias("source"),
                         error.alias("_error"),
                         F.lit(None).cast("long").alias("_block"),
                         F.lit(None).cast("long").alias("_mid"),
                         F.col("_metadata.row_index").alias("_row"))

    try:
        df = as_lines(reader(spark, src.path).option("mergeSchema", "true").parquet(src.path))
        df.schema  # noqa: B018 - forces the footer read now, inside the try
        return _with_unopenable(spark, df, src.path)
    except unreadable:
        pass
    files = sorted(r.path for r in reader(spark, src.path).format("binaryFile").load(src.path)
                   .select("path").collect())
    parts, broken = [], []
    for f in files:
        try:
            part = as_lines(reader(spark).parquet(glob_escaped(f)))
            part.schema  # noqa: B018
            parts.append(part)
        except unreadable as exc:
            first = str(exc).strip().splitlines()[0][:300]
            broken.append({"line": None, "source": f, "_error": f"unreadable_parquet: {first}",
                           "_block": None, "_mid": None, "_row": None})
    broken += [{"source": f"file:{name}", "_error": NOT_UTF8} for name in unopenable(src.path)]
    out = local_frame(spark, broken, _LINES_SCHEMA)
    for part in parts:
        out = out.unionByName(part)
    return out


TREE_LISTING_SCHEMA = ("repo string, path string, abspath binary, size long, language string, "
                       "license string, skip string, error string, source string")


def listing_row(f: TreeFile) -> dict:
    """A listed file as the executors get it: the path to open as the file system's own bytes,
    names as text (``udfs.trees.as_text``)."""
    return {"repo": as_text(f.repo), "path": as_text(f.relpath), "abspath": os.fsencode(f.abspath),
            "size": f.size, "language": f.language, "license": f.license, "skip": f.skip,
            "error": f.error, "source": as_text(f.abspath)}


def _tree_listing(spark: SparkSession, src: TreeSource) -> DataFrame:
    rows = [listing_row(f) for repo, root in repo_roots(src.path, src.layout)
            for f in walk_repo(repo, root)]
    listing = local_frame(spark, rows, TREE_LISTING_SCHEMA)
    # Spread the reads: ~200 files per task, at least one task per core.
    parts = max(default_parallelism(spark), len(rows) // 200 + 1)
    return listing.repartition(parts, "path")


def _line_numbers(decided: DataFrame) -> DataFrame:
    """``decided`` with each quarantined or dropped JSONL row's ``source`` as ``<file>:<line>``
    and each such Parquet row's as ``<file>#row=<n>``, and a dropped row's ``detail`` naming its
    source (silver.rejects has no source column; a blank JSONL line has no repo or path).

    The numbers come from the decided rows' locators (``jobs.stage.with_line_numbers``), and
    only the located rows join: no kept line's text moves.
    """
    from pyspark.sql import functions as F

    quarantined = F.col("_outcome") != KEPT  # quarantined or dropped: rows a person looks up
    scanned = decided.where(F.col("_block").isNotNull())
    jsonl = (with_line_numbers(scanned.where(quarantined), scanned, "source")
             .withColumn("source", F.concat_ws(":", "source", F.col("_line").cast("string")))
             .select(*decided.columns))
    parquet = decided.where(quarantined & F.col("_row").isNotNull()).withColumn(
        "source", F.concat("source", F.lit("#row="), F.col("_row").cast("string")))
    rest = decided.where(~quarantined | (F.col("_block").isNull() & F.col("_row").isNull()))
    located = rest.unionByName(jsonl).unionByName(parquet)
    return located.withColumn("detail", F.when(F.col("_outcome") == DROPPED, F.to_json(F.struct(
        "source_kind", "source"))))


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    chars = cfg.ingest.quarantine_payload_chars
    schema = arrow_schema(DECIDED_SCHEMA)
    read_parts, decided_parts = [], []
    for src in cfg.ingest.of(*FILE_SOURCES):  # git and chat sources: jobs.commits, jobs.chats
        if isinstance(src, TreeSource):
            listing = _tree_listing(spark, src)
            read_parts.append(listing.select(F.col("size").alias("_bytes")))
            decide = _decide_tree_files(chars, cfg.ingest.max_file_bytes, schema)
            decided_parts.append(map_in_arrow(listing, decide, DECIDED_SCHEMA))
        else:
            lines = _jsonl(spark, src) if isinstance(src, JsonlSource) else _parquet(spark, src)
            read_parts.append(lines.select(
                F.coalesce(F.length("line"), F.lit(0)).cast("long").alias("_bytes")))
            decided_parts.append(map_in_arrow(
                lines, _decide_records(src.kind, chars, schema, dict(src.columns)),
                DECIDED_SCHEMA))
    if not decided_parts:  # a run of git or chat sources only
        read_parts.append(local_frame(spark, [], "_bytes long"))
        decided_parts.append(local_frame(spark, [], DECIDED_SCHEMA))
    input_rows, decided = read_parts[0], decided_parts[0]
    for r, d in zip(read_parts[1:], decided_parts[1:]):
        input_rows, decided = input_rows.unionByName(r), decided.unionByName(d)
    decided = decided.persist(StorageLevel.MEMORY_AND_DISK)
    return StageResult(input_rows=input_rows, decided=_line_numbers(decided),
                       kept_columns=FILE_COLUMNS + ("source_kind", "source"),
                       persisted=[decided])


STAGE = Stage(
    name="ingest", inputs=(), output="bronze.files", build=build,
    description="sources (JSONL, Parquet, local trees) → bronze.files, bad records quarantined",
)

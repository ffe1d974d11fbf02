"""Delta tables read and written by the Python tasks themselves, with pyarrow, where a table
allows it: the Parquet files of one table version dealt into tasks, and Parquet files written
with Delta's own per-file statistics for the driver to commit with delta-rs
(``Lakehouse.overwrite_files``). The dedup stage's ``tuning`` paths; every caller falls back to
Spark's scan and writer when these refuse a table."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from jobs.schemas import STATS_COLUMNS, UNINDEXED_TEXT
from jobs.session import default_parallelism

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession


def local_parquet_files(df: DataFrame) -> list[tuple[str, int]] | None:
    """(path, bytes) of every Parquet file ``df`` reads, when a Python task that reads those
    files with pyarrow gets exactly ``df``'s rows: ``df`` only selects columns of one Delta table
    version (no filter, join or expression), the table has no partition columns, no column
    mapping and no deletion vectors, and every file is on the local filesystem (a local master,
    or a mount every executor shares). Else None, as on Spark Connect, where the plan cannot be
    inspected; callers then read through Spark's scan.

    Why at all: a Python stage that needs a big column (the text) pays for Spark's Parquet
    decoding into JVM rows and then for the copy of every row into the Arrow batches it hands
    the worker. pyarrow decodes the same file straight into Arrow, several times faster than the
    two steps together (bench/RESULTS.md, "Dedup speed").
    """
    try:
        plan = df._jdf.queryExecution().optimizedPlan()
        while plan.nodeName() == "Project":
            columns = plan.projectList()
            if any(columns.apply(i).getClass().getSimpleName() != "AttributeReference"
                   for i in range(columns.size())):
                return None
            plan = plan.child()
        if plan.nodeName() != "LogicalRelation":
            return None
        relation = plan.relation()
        index = relation.location()
        if "delta" not in index.getClass().getName() or relation.partitionSchema().length():
            return None
        protocol = index.protocol()
        if (index.metadata().columnMappingMode().name() != "none"
                or protocol.readerFeatureNames().contains("deletionVectors")):
            return None
        uris = df.inputFiles()
    except Exception:  # noqa: BLE001 - Spark Connect, another Delta version: Spark's scan reads it
        return None
    files = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme != "file" or not uri.endswith(".parquet"):
            return None
        path = unquote(parsed.path)
        if not os.path.isfile(path):
            return None
        files.append((path, os.path.getsize(path)))
    return files


# Parquet bytes a task of ``parquet_tasks`` holds at most, about: Spark's default split size.
TASK_BYTES = 128 << 20


def parquet_tasks(spark: SparkSession, files: list[tuple[str, int]],
                  task_bytes: int = TASK_BYTES) -> list[list[str]]:
    """``files`` dealt into tasks of about equal bytes: one per core of the cluster
    (``defaultParallelism``), or a multiple of that so that a task holds about ``task_bytes`` at
    most. Largest file first, each file goes to the task with the fewest bytes so far (Graham's
    LPT rule: every task ends within about one file of the others); the tasks are listed largest
    first. A file is never split.

    Not Spark's grouping (``FilePartition``: tasks of up to ``spark.sql.files.maxPartitionBytes``,
    filled in order): each Python task has a fixed cost (the worker's set-up and its Arrow
    streams), and one task per file ended with one core waiting for the last one
    (bench/RESULTS.md, "Dedup speed").
    """
    import heapq

    cores = default_parallelism(spark)
    total = sum(length for _, length in files)
    count = cores * max(1, -(-total // (cores * task_bytes)))
    loads: list[tuple[int, int, list[str]]] = [(0, i, []) for i in range(count)]
    for path, length in sorted(files, key=lambda f: (-f[1], f[0])):
        load, i, paths = heapq.heappop(loads)
        paths.append(path)
        heapq.heappush(loads, (load + length, i, paths))
    return [paths for _, _, paths in sorted(loads, key=lambda t: (-t[0], t[1])) if paths]


def map_parquet_in_arrow(spark: SparkSession, tasks: list[list[str]], schema,
                         fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
                         out_schema: str) -> DataFrame:
    """``map_in_arrow`` over Parquet files read in the tasks: task i reads the files
    ``tasks[i]`` (``parquet_tasks``) with pyarrow, in batches of about
    ``spark.sql.execution.arrow.maxBytesPerBatch``, as the Spark ``schema`` (a StructType: its
    columns by name, case-insensitively as Spark matches them; a column a file lacks, written
    before the table had it, reads as nulls, as in Delta) and hands the batches to ``fn``."""
    from pyspark.sql.pandas.types import to_arrow_schema

    from jobs.pyworker import map_in_arrow

    want = to_arrow_schema(schema)
    batch_bytes = int(spark.conf.get("spark.sql.execution.arrow.maxBytesPerBatch", str(16 << 20)))

    def read(path: str) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = {name.lower(): name for name in parquet.schema_arrow.names}
        present = [names[f.name.lower()] for f in want if f.name.lower() in names]
        meta = parquet.metadata
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            size = meta.row_group(group).total_byte_size
            step = max(1, rows * batch_bytes // max(size, 1))
            for batch in parquet.iter_batches(batch_size=step, row_groups=[group],
                                              columns=present, use_threads=False):
                columns = [batch.column(names[f.name.lower()]).cast(f.type)
                           if f.name.lower() in names else pa.nulls(batch.num_rows, f.type)
                           for f in want]
                yield pa.RecordBatch.from_arrays(columns, schema=want)

    def run(ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        def batches() -> Iterator[pa.RecordBatch]:
            for chunk in ids:
                for i in chunk.column(0).to_pylist():
                    for path in tasks[i]:
                        yield from read(path)

        return fn(batches())

    return map_in_arrow(spark.range(0, len(tasks), 1, max(1, len(tasks))), run, out_schema)


# What a ``parquet_file_writer`` task reports of each file it wrote, for ``overwrite_files``.
WRITTEN_SCHEMA = "path string, size long, rows long, modified long, stats string"
# Arrow bytes that go into one file before a task starts the next: ~40-50 MB of Parquet for code.
FILE_ARROW_BYTES = 128 << 20
# Delta's ``dataSkippingStringPrefixLength``: string bounds are kept to this many characters.
STATS_PREFIX = 32


class FileStats:
    """Delta's per-file statistics of the ``columns`` of the batches ``add``-ed: numRecords,
    nullCount, and minValues/maxValues where they are sound bounds. A string's minimum is cut to
    ``STATS_PREFIX`` characters (a prefix is never greater); its maximum is kept only when it is
    that short (Spark appends a tie-breaker character to a cut maximum; leaving it out costs
    nothing but skipping on that column). A float column with NaN gets no bounds, nor does a
    column of another type (Delta keeps none for booleans; dates and the like are not written
    here). The bounds
    compare as Spark does: numbers by value, strings by their UTF-8 bytes."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self.rows = 0
        self.nulls = dict.fromkeys(columns, 0)
        self.low: dict = {}
        self.high: dict = {}
        self.unbounded: set[str] = set()

    def add(self, batch: pa.RecordBatch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        for name in self.columns:
            column = batch.column(name)
            self.nulls[name] += column.null_count
            if name in self.unbounded:
                continue
            kind = column.type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_string(kind)):
                self.unbounded.add(name)
                continue
            if pa.types.is_floating(kind) and pc.any(pc.is_nan(column)).as_py():
                self.unbounded.add(name)
                continue
            bounds = pc.min_max(column).as_py()
            if bounds["min"] is None:
                continue
            low, high = bounds["min"], bounds["max"]
            # Python orders str by code point, which is the UTF-8 byte order Spark uses
            if name not in self.low or low < self.low[name]:
                self.low[name] = low
            if name not in self.high or high > self.high[name]:
                self.high[name] = high

    def json(self) -> str:
        low, high = {}, {}
        for name in self.columns:
            if name in self.unbounded or name not in self.low:
                continue
            value, top = self.low[name], self.high[name]
            if isinstance(value, str):
                low[name] = value[:STATS_PREFIX]
                if len(top) <= STATS_PREFIX:
                    high[name] = top
            else:
                low[name], high[name] = value, top
        return json.dumps({"numRecords": self.rows, "minValues": low, "maxValues": high,
                           "nullCount": self.nulls}, separators=(",", ":"))


def parquet_file_writer(directory: str, schema: pa.Schema, stats_columns: list[str],
                        transform: Callable[[pa.RecordBatch], pa.RecordBatch],
                        file_bytes: int = FILE_ARROW_BYTES, folder: str = "",
                        ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``map_in_arrow`` function that writes its task's batches, each passed through
    ``transform`` (which returns them as ``schema``), into snappy Parquet files in
    ``directory`` (a new file after about ``file_bytes`` of Arrow data), and yields one
    ``WRITTEN_SCHEMA`` row per file, with its Delta statistics (``FileStats``) for
    ``overwrite_files``. Long text columns (``UNINDEXED_TEXT``) get no dictionary and no Parquet
    statistics, as Spark's writer would find no use for either. File names are unique per task
    attempt: a retried task writes new files and only the ones reported are committed.
    ``folder``: a partition's folder under ``directory`` (``stage=dedup``), for the files and the
    paths reported."""
    from jobs.arrow import arrow_schema

    stats_columns = list(stats_columns)
    out = arrow_schema(WRITTEN_SCHEMA)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        coded = [f.name for f in schema if f.name not in UNINDEXED_TEXT]
        writer = stats = name = None
        held = 0

        def close() -> pa.RecordBatch:
            writer.close()
            path = os.path.join(directory, name)  # name: under the folder
            info = os.stat(path)
            return pa.RecordBatch.from_pylist(
                [{"path": name, "size": info.st_size, "rows": stats.rows,
                  "modified": int(info.st_mtime * 1000), "stats": stats.json()}], schema=out)

        for batch in batches:
            batch = transform(batch)
            if batch.num_rows == 0:
                continue
            if writer is None:
                name = os.path.join(folder, f"part-{uuid.uuid4()}-c000.snappy.parquet")
                os.makedirs(os.path.join(directory, folder), exist_ok=True)
                writer = pq.ParquetWriter(os.path.join(directory, name), schema,
                                          compression="snappy", use_dictionary=coded,
                                          write_statistics=coded)
                stats, held = FileStats(stats_columns), 0
            writer.write_batch(batch)
            stats.add(batch)
            held += batch.nbytes
            if held >= file_bytes:
                yield close()
                writer = None
        if writer is not None:
            yield close()

    return run


def table_stats_columns(table_config: dict[str, str], names: list[str]) -> list[str]:
    """Of the columns ``names``, those Delta keeps file statistics for:
    ``delta.dataSkippingStatsColumns`` when the table sets it, else the first
    ``delta.dataSkippingNumIndexedCols`` (default 32; negative: all)."""
    named = table_config.get(STATS_COLUMNS)
    if named:
        listed = {c.strip() for c in named.split(",")}
        return [c for c in names if c in listed]
    count = int(table_config.get("delta.dataSkippingNumIndexedCols", "32"))
    return list(names) if count < 0 else list(names[:count])

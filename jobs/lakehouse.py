"""The shared spine of every stage: the Spark session, Delta table I/O, and the row ledger.

Tables are Delta tables addressed by ``layer.name`` (``bronze.files``) and stored at
``<lakehouse>/<layer>/<name>``. Path-based, so the same code runs against a local folder, S3/ABFS,
or DBFS without a metastore.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from jobs.config import REPO_ROOT, SparkSettings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

POM = REPO_ROOT / "conf" / "jars" / "pom.xml"
POOLS = REPO_ROOT / "conf" / "fairscheduler.xml"  # one scheduler pool per table

TABLES: dict[str, str] = {
    "bronze.files": "every ingested file, one row per file, schema-checked",
    "silver.files": "files that passed every quality rule",
    "silver.unique_files": "silver.files without exact and near duplicates (one per cluster)",
    "silver.dup_clusters": "every exact or near-duplicate cluster: members, representative, Jaccard",
    "gold.samples": "training samples cut along the syntax tree: completion, docstring, FIM",
    "gold.sample_skips": "every candidate sample the split stage skipped, with the reason",
    "gold.sft": "SFT records: ChatML messages, quality, weight, train/eval split, token counts",
    "gold.sft_skips": "augmentations not emitted (unparseable), with the reason",
    "gold.sft_token_stats": "token count p50/p90/p99/max and rows over max length",
    "silver.rejects": "every row a stage dropped, with the stage and the reason",
    "ops.quarantine": "records a stage could not read or parse, with the payload and the error",
    "ops.ledger": "one row per stage per run: rows in/out/dropped/quarantined, versions, seconds",
}


# Tables that every stage writes a slice of (``stage = '<name>'``), partitioned by that column, so
# replacing one stage's slice is a metadata-only delete. Unpartitioned, Delta's replaceWhere scanned
# every earlier slice's files (their text included) to find the rows to delete: 2.9 s of the
# dedup stage on the make-run corpus, in one task (bench/RESULTS.md).
PARTITIONS: dict[str, tuple[str, ...]] = {"silver.rejects": ("stage",), "ops.quarantine": ("stage",)}

# Long text columns Delta keeps no per-file statistics for. Their min/max (cut to 32 characters)
# never skip a file, and computing them is about a tenth of writing the text (the make-run
# silver.files, 360 MB: 2.51 s with them, 2.24 s without, bench/delta_write.py). A table with one
# of them gets ``delta.dataSkippingStatsColumns`` = its other columns that Delta can keep
# statistics for; the rest keep Delta's default (the first 32 columns).
UNINDEXED_TEXT = frozenset({"text", "payload", "context", "target", "prefix", "middle", "suffix",
                            "rendered"})
STATS_COLUMNS = "delta.dataSkippingStatsColumns"


def stats_columns(schema, partitions: tuple[str, ...] = ()) -> str | None:
    """``delta.dataSkippingStatsColumns`` for a table of ``schema`` (a Spark StructType): its
    columns of the types Delta keeps min/max for (numbers, strings, dates, timestamps), without
    ``UNINDEXED_TEXT`` and ``partitions`` (Delta refuses both); None when it has no long text."""
    from pyspark.sql import types as T

    skippable = (T.NumericType, T.StringType, T.DateType, T.TimestampType, T.TimestampNTZType)
    names = [f.name for f in schema.fields]
    if not UNINDEXED_TEXT.intersection(names):
        return None
    keep = [f.name for f in schema.fields if f.name not in UNINDEXED_TEXT
            and f.name not in partitions and isinstance(f.dataType, skippable)]
    return ",".join(keep) or None


class LedgerImbalance(RuntimeError):
    """A stage's rows in != rows out + dropped + quarantined."""


# ---------------------------------------------------------------------------------------------
# Delta jars and the Spark session


def resolve_delta_jars(jars_dir: str | Path) -> list[str]:
    """Jars of Delta Lake resolved by Maven from conf/jars/pom.xml into ``jars_dir`` (cached).

    The folder carries a stamp with the pom's hash, so editing the pom re-resolves. Maven writes to a
    temporary folder first, so an interrupted resolve never leaves a half-filled cache.
    """
    target = Path(jars_dir)
    if not target.is_absolute():
        target = REPO_ROOT / target
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    stamp = target / ".pom-sha256"
    if not (stamp.exists() and stamp.read_text().strip() == want):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "spark.delta_jars=maven needs Maven (mvn) on PATH; install it, or set "
                "spark.delta_jars=packages to let Spark fetch io.delta:delta-spark itself"
            )
        tmp = Path(tempfile.mkdtemp(prefix=".jars-", dir=target.parent))
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"Maven could not resolve Delta jars:\n{done.stdout}{done.stderr}")
        (tmp / ".pom-sha256").write_text(want)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    jars = sorted(glob.glob(str(target / "*.jar")))
    if not jars:
        raise RuntimeError(f"no jars in {target}; delete it to resolve again")
    return jars


def _delta_on_classpath() -> bool:
    home = os.environ.get("SPARK_HOME") or str(Path(__import__("pyspark").__file__).parent)
    return bool(glob.glob(os.path.join(home, "jars", "delta-spark*.jar"))) or (
        "DATABRICKS_RUNTIME_VERSION" in os.environ
    )


def delta_jars_mode(settings: SparkSettings) -> str:
    """Resolve ``auto`` to provided / maven / packages (see ``SparkSettings.delta_jars``)."""
    if settings.delta_jars != "auto":
        return settings.delta_jars
    if _delta_on_classpath() or "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit the JVM is already up: jars must come from --packages/--jars.
        return "provided"
    return "maven" if shutil.which("mvn") else "packages"


def build_code_zip() -> str:
    """Zip the ``jobs`` and ``udfs`` packages for executors' Python path (deterministic order).

    The zip lives in a temporary folder that is removed when this process exits: executors fetch
    it from the driver while the session runs, and each driver builds its own.
    """
    folder = tempfile.mkdtemp(prefix="codemill-code-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = Path(folder) / "codemill_code.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in ("jobs", "udfs"):
            for path in sorted((REPO_ROOT / package).rglob("*.py")):
                zf.write(path, path.relative_to(REPO_ROOT).as_posix())
    return str(out)


def spark_session(settings: SparkSettings) -> SparkSession:
    """The one SparkSession factory: local, local-cluster, spark-submit and Databricks alike."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(settings.app_name)
    if settings.master:
        builder = builder.master(settings.master)
    mode = delta_jars_mode(settings)
    if mode == "maven":
        builder = builder.config("spark.jars", ",".join(resolve_delta_jars(settings.jars_dir)))
    elif mode == "packages":
        builder = builder.config("spark.jars.packages", settings.delta_package)
    local = (settings.master or "").startswith("local")
    if local:
        # Python workers must use this interpreter (with our dependencies), not whatever python3
        # is on PATH. An in-process SparkContext reads PYSPARK_PYTHON (the conf key
        # spark.pyspark.python is only honoured by spark-submit).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        # Jobs of concurrent threads share the executors instead of queueing behind the first
        # job's tasks (a stage's writes run side by side: jobs.runner._write_all).
        .config("spark.scheduler.mode", "FAIR")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Arrow batches to Python workers of at most 16 MB (default: 10,000 rows, about 150 MB
        # of source files): the JVM fills the next batch while Python hashes this one, and a
        # worker's memory stays bounded. dedup's signing pass: 5.7-6.4 s → 4.9-5.0 s on the
        # make-run corpus (local[2], bench/RESULTS.md).
        .config("spark.sql.execution.arrow.maxBytesPerBatch", str(16 << 20))
        # Room for every class Spark generates (whole-stage code, projections, orderings) in a
        # session. The default LRU of 100 holds less than one dedup stage (~215 distinct
        # classes, many of them Delta's own log and commit queries), so a stage recompiled each
        # class with Janino and the JVM's JIT compiled the new classes again: a warm dedup run
        # on the make-run corpus did ~205 compilations and its JIT threads burnt a median 14 s
        # of CPU on 2 cores; with the room, 2 compilations, 8 s, and the run took ~12 % less
        # (bench/RESULTS.md, session 12). A whole `codemill run` generates ~390 classes.
        .config("spark.sql.codegen.cache.maxEntries", "1000")
        # Parquet is decoded 256 rows at a time (default 4,096). Our big tables hold whole source
        # files, ~15 KB a row, so a 4,096-row batch put ~60 MB of text in one column vector and
        # the decoding ran from main memory. Reading silver.files' text at 2x the bench corpus
        # (720 MB): 1.8-2.4 s → 1.0-1.3 s; 128 or 64 rows were no faster. A warm dedup run at
        # 1x: 14.6-15.0 s → 13.8-14.3 s, medians of alternating sessions (bench/RESULTS.md,
        # session 13). Narrow tables (ids, the ledger) read the same either way.
        .config("spark.sql.parquet.columnarReaderBatchSize", "256")
    )
    if POOLS.exists():  # else Spark makes each pool on first use (and warns)
        builder = builder.config("spark.scheduler.allocation.file", str(POOLS))
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    ship = settings.ship_code if settings.ship_code is not None else not (
        settings.master or "").startswith("local[")
    if ship:
        spark.sparkContext.addPyFile(build_code_zip())
    return spark


# ---------------------------------------------------------------------------------------------
# Tables


def _is_uri(path: str) -> bool:
    return "://" in path or path.startswith(("dbfs:", "file:"))


class Lakehouse:
    """Delta tables under one root. ``name`` is ``layer.table``; versions are Delta versions."""

    def __init__(self, spark: SparkSession | None, root: str):
        self.spark = spark
        self.root = root if _is_uri(root) else str(Path(root).resolve())
        self._written: dict[str, int] = {}  # table → numOutputRows of this object's last write
        self._details: dict[str, tuple[list[str], dict[str, str]]] = {}  # partitions, properties

    def path(self, name: str) -> str:
        layer, _, table = name.partition(".")
        if not table:
            raise ValueError(f"table name must be layer.table, got {name!r}")
        return f"{self.root.rstrip('/')}/{layer}/{table}"

    def runs_dir(self, run_id: str) -> str:
        return f"{self.root.rstrip('/')}/_runs/{run_id}"

    def exists(self, name: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    def version(self, name: str) -> int:
        return self._commit(name)[0]

    def read(self, name: str, version: int | None = None) -> tuple[DataFrame, int]:
        """Read a table at ``version`` (default: latest) and return it with the version read."""
        if not self.exists(name):
            raise FileNotFoundError(f"table {name} does not exist at {self.path(name)}; "
                                    "run the stage that writes it first")
        v = self.version(name) if version is None else version
        df = self.spark.read.format("delta").option("versionAsOf", v).load(self.path(name))
        return df, v

    def empty_slice_version(self, name: str, column: str, value: str) -> int | None:
        """The table's version when it holds no file of the slice ``column = value`` (a partition
        column): replacing that slice with nothing would change nothing. None when it holds one,
        or when that cannot be told without Spark (not partitioned by ``column``, a log that
        delta-rs cannot read): then write. Read on the driver by delta-rs in a few ms, where an
        empty replaceWhere write costs Delta's snapshot jobs and a commit check beside the
        stage's other writes."""
        try:
            from deltalake import DeltaTable

            table = DeltaTable(self.path(name))
            if table.metadata().partition_columns != [column]:
                return None
            if any(part.get(column) == value for part in table.partitions()):
                return None
            return table.version()
        except Exception:  # noqa: BLE001 - unsure: the write replaces the slice as always
            return None

    def local_table(self, name: str, schema, partitions: tuple[str, ...] = ()
                    ) -> tuple[str, list[str]] | None:
        """(the table's directory, the columns Delta keeps statistics for) when
        ``overwrite_files`` may replace its contents with Parquet files written by Python tasks:
        the table exists on the local filesystem (or a mount every executor shares), its
        protocol is Delta's plain one (reader 1, writer 2: no table features, no column mapping,
        no deletion vectors, no change data feed), its partition columns are ``partitions``
        (default none), it has no CHECK constraints, invariants or append-only setting, and its
        columns are ``schema``'s (a StructType: the same names, types and order, all nullable).
        Else None: the table is written through Spark as always (so is a table not created yet:
        its first write sets its properties)."""
        if _is_uri(self.root) and not self.root.startswith("file:"):
            return None
        try:
            from deltalake import DeltaTable

            table = DeltaTable(self.path(name))
            protocol, metadata = table.protocol(), table.metadata()
            if (protocol.min_reader_version != 1 or protocol.min_writer_version > 2
                    or protocol.writer_features or protocol.reader_features
                    or metadata.partition_columns != list(partitions)):
                return None
            config = metadata.configuration
            if (config.get("delta.appendOnly", "false").lower() == "true"
                    or any(k.startswith("delta.constraints.") for k in config)):
                return None
            fields = json.loads(table.schema().to_json())["fields"]
            want = schema.jsonValue()["fields"]
            if ([(f["name"], f["type"], f["nullable"], f.get("metadata") or {}) for f in fields]
                    != [(f["name"], f["type"], True, {}) for f in want]):
                return None
            stats = table_stats_columns(
                config, [f["name"] for f in want if f["name"] not in partitions])
        except Exception:  # noqa: BLE001 - no such table, a log delta-rs cannot read: Spark writes
            return None
        return self.local_table_dir(name), stats

    def local_table_dir(self, name: str) -> str:
        path = self.path(name)
        return unquote(urlparse(path).path) if path.startswith("file:") else path

    def overwrite_files(self, name: str, files: list[dict], rows: int | None = None,
                        slice_: tuple[str, str] | None = None) -> int:
        """Replace the table's contents with ``files`` (rows of ``WRITTEN_SCHEMA``: Parquet files
        that ``parquet_file_writer`` tasks wrote into its directory) in one Delta commit, and
        return its version. The commit is delta-rs's (``create_write_transaction``, mode
        overwrite: every current file is removed): the protocol and the table's metadata stay
        as they are, so Spark and every other Delta reader read it as any other version, with
        time travel and history. Only for a table ``local_table`` accepts. ``rows``: how many
        rows the files must hold, when the caller knows (else what the tasks report).
        ``slice_``: (partition column, value): only that partition is replaced, and ``files`` are
        in its folder (``parquet_file_writer``'s ``slice_``).

        A failure before the commit leaves the files written so far in the directory, unlisted by
        the log, as a failed Spark write does; ``VACUUM`` removes them.
        """
        from deltalake import DeltaTable
        from deltalake.transaction import AddAction, CommitProperties

        written = sum(int(f["rows"]) for f in files)
        rows = written if rows is None else rows
        if written != rows:
            raise RuntimeError(f"{name}: the write tasks wrote {written} rows, {rows} expected; "
                               "nothing was committed")
        directory = self.local_table_dir(name)
        for f in files:  # tasks on a machine without the table's mount wrote elsewhere: refuse
            where = os.path.join(directory, f["path"])
            if not os.path.isfile(where) or os.path.getsize(where) != int(f["size"]):
                raise RuntimeError(f"{name}: {where}, written by a task, is not on the driver's "
                                   "filesystem with the size the task reported (the executors "
                                   "must share the table's mount); nothing was committed")
        table = DeltaTable(self.path(name))
        values = {slice_[0]: slice_[1]} if slice_ else {}
        actions = [AddAction(f["path"], int(f["size"]), values, int(f["modified"]), True,
                             f["stats"]) for f in files]
        table.create_write_transaction(
            actions, mode="overwrite", schema=table.schema(),
            partition_by=[slice_[0]] if slice_ else None,
            partition_filters=[(slice_[0], "=", slice_[1])] if slice_ else None,
            commit_properties=CommitProperties(custom_metadata={
                "engine": "codemill overwrite_files (delta-rs)", "numOutputRows": str(rows),
                "numFiles": str(len(files))}))
        self._written[name] = rows
        return DeltaTable(self.path(name)).version()

    def rows_written(self, name: str) -> int:
        """Rows the table's latest commit wrote (Delta's ``numOutputRows`` operation metric), as
        ``write`` read it with the commit's version."""
        if name not in self._written:
            self._latest_commit(name)
        if name not in self._written:
            raise KeyError(f"{name}: its latest commit has no numOutputRows metric")
        return self._written[name]

    def _latest_commit(self, name: str) -> int:
        """The table's latest version, after a write; its ``numOutputRows`` goes to ``_written``."""
        version, metrics = self._commit(name)
        self._written.pop(name, None)
        if "numOutputRows" in metrics:
            self._written[name] = int(metrics["numOutputRows"])
        return version

    def _commit(self, name: str) -> tuple[int, dict[str, str]]:
        """(latest version, its commit's operation metrics)."""
        found = self._latest_commit_from_log(name)
        if found is None:
            from delta.tables import DeltaTable

            row = DeltaTable.forPath(self.spark, self.path(name)).history(1).select(
                "version", "operationMetrics").first()
            found = int(row["version"]), row["operationMetrics"] or {}
        return found

    def _latest_commit_from_log(self, name: str) -> tuple[int, dict[str, str]] | None:
        """(latest version, its commit's operation metrics) from Delta's own log on the driver:
        ``DeltaLog.update()`` and the commit file read through the table's LogStore, no Spark job.
        None where Delta's JVM classes are out of reach from Python (Spark Connect, a Delta
        other than the open-source one); the caller then asks ``DeltaTable.history(1)``.

        Why not just ``history(1)``: it reads the commit in a Spark job over a one-row range
        that starts at the version, and the job's generated code carries the version as a
        literal, so every write and every read of a table compiled a new class with Janino, one
        that no later run could reuse (2 of a warm dedup run's 2 compilations), and the JIT kept
        compiling Janino itself in warm runs (bench/RESULTS.md, session 14).
        """
        from py4j.protocol import Py4JError

        try:
            jvm = self.spark._jvm
            log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
                self.spark._jsparkSession, self.path(name))
            snapshot = log.update(*(getattr(log, f"update$default${i}")() for i in (1, 2, 3)))
            version = int(snapshot.version())
            if version < 0:
                return None  # not a table (yet): let history(1) raise its own error
            names = getattr(getattr(jvm.org.apache.spark.sql.delta.util, "FileNames$"), "MODULE$")
            text = log.store().read(names.unsafeDeltaFile(log.logPath(), version),
                                    log.newDeltaHadoopConf()).mkString("\n")
        except (Py4JError, AttributeError):  # no Delta classes, or no JVM (Spark Connect)
            return None
        for line in text.splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                return version, action["commitInfo"].get("operationMetrics") or {}
        return version, {}

    def _detail(self, name: str) -> tuple[list[str], dict[str, str]]:
        """(partition columns, table properties), read once per table by this object (its own
        writes keep them up to date). From the table's metadata on the driver (DESCRIBE TABLE,
        SHOW TBLPROPERTIES): ``DeltaTable.detail()`` also sums the size of every file in a Spark
        job, which cost 0.2 s alone and up to 2.8 s beside a stage's other writes (measured)."""
        if name not in self._details:
            table = f"delta.`{self.path(name)}`"
            properties = {r["key"]: r["value"]
                          for r in self.spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
            described = [r["col_name"] for r in self.spark.sql(f"DESCRIBE TABLE {table}").collect()]
            partitions: list[str] = []
            if "# Partition Information" in described:  # then a header row, then one per column
                partitions = described[described.index("# Partition Information") + 2:]
            self._details[name] = (partitions, properties)
        return self._details[name]

    def partition_columns(self, name: str) -> list[str]:
        return self._detail(name)[0]

    def _set_stats_columns(self, name: str, want: str) -> None:
        """Point an existing table's statistics at the columns ``want`` before a write. Only
        columns the table has now can be named (Delta checks), so columns the write adds are
        named on the table's next write; a named column the write drops is no longer named
        (Delta would refuse the write)."""
        _, properties = self._detail(name)
        have = properties.get(STATS_COLUMNS)
        if have == want:
            return
        table = f"delta.`{self.path(name)}`"
        current = set(self.spark.read.format("delta").load(self.path(name)).columns)
        now = ",".join(c for c in want.split(",") if c in current)
        if now and now != have:
            self.spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('{STATS_COLUMNS}' = '{now}')")
            properties[STATS_COLUMNS] = now
        elif not now and have is not None:
            self.spark.sql(f"ALTER TABLE {table} UNSET TBLPROPERTIES ('{STATS_COLUMNS}')")
            properties.pop(STATS_COLUMNS)

    def write_by_tasks(self, name: str, df: DataFrame,
                       slice_: tuple[str, str] | None = None) -> int:
        """Overwrite the table with ``df``'s rows, written as Parquet by Python tasks (one file or
        more per partition of ``df``: ``parquet_file_writer``) and committed by delta-rs
        (``overwrite_files``), when ``local_table`` accepts the table; else ``write``. The rows
        cross to Python as Arrow batches, so this is for tables without long text (dedup's
        silver.dup_clusters). ``slice_``: (partition column, value), for a table partitioned by
        that column: only that partition is replaced (``write``'s ``replace_where``), and a row of
        ``df`` outside it fails the write before the commit (dedup's slice of silver.rejects).

        Why: Spark's Delta overwrite first rebuilds the table's state from its log (three jobs,
        for the domain metadata of a replaced table) and lists its files (one more), whatever the
        table's size; beside the stage's other writes, on 2 cores, those jobs waited for the
        output's write tasks. delta-rs reads the log on the driver (bench/RESULTS.md, session 17).
        """
        import pyarrow as pa
        from pyspark.sql.pandas.types import to_arrow_schema

        from jobs.pyworker import map_in_arrow

        where = f"{slice_[0]} = '{slice_[1]}'" if slice_ else None
        plain = slice_ is None or re.fullmatch(r"[A-Za-z0-9_.-]+", slice_[1])  # no escaping
        target = self.local_table(name, df.schema, (slice_[0],) if slice_ else ()) if plain else None
        if target is None:
            return self.write(name, df, replace_where=where)
        directory, stats = target
        schema = to_arrow_schema(df.select([c for c in df.columns
                                            if not slice_ or c != slice_[0]]).schema)

        def as_table(batch: pa.RecordBatch) -> pa.RecordBatch:
            if slice_:
                import pyarrow.compute as pc

                values = batch.column(slice_[0])
                if values.null_count or not pc.all(pc.equal(values, slice_[1])).as_py():
                    raise ValueError(f"{name}: a row outside the slice {where}")
            return pa.RecordBatch.from_arrays([batch.column(f.name) for f in schema],
                                              schema=schema)

        folder = f"{slice_[0]}={slice_[1]}" if slice_ else ""
        written = map_in_arrow(df, parquet_file_writer(directory, schema, stats, as_table,
                                                       folder=folder),
                               WRITTEN_SCHEMA).collect()
        return self.overwrite_files(name, [r.asDict() for r in written], slice_=slice_)

    def write(self, name: str, df: DataFrame, replace_where: str | None = None,
              append: bool = False) -> int:
        """Overwrite (or append to, or replace the ``replace_where`` slice of) a table.

        Tables in ``PARTITIONS`` are written partitioned. One that an earlier version wrote
        without those partitions is rewritten once, partitioned: its other rows and ``df``.
        """
        from pyspark.sql import functions as F

        partitions = PARTITIONS.get(name, ())
        want = stats_columns(df.schema, partitions)
        exists = self.exists(name)
        if want is not None and not exists:  # created with the property, in the write's commit
            creator = df.writeTo(f"delta.`{self.path(name)}`").using("delta").tableProperty(
                STATS_COLUMNS, want)
            if partitions:
                creator = creator.partitionedBy(*[F.col(c) for c in partitions])
            creator.create()
            self._details[name] = (list(partitions), {STATS_COLUMNS: want})
            return self._latest_commit(name)
        if want is not None:
            self._set_stats_columns(name, want)
        writer = df.write.format("delta")
        if append:
            writer = writer.mode("append").option("mergeSchema", "true")
        elif replace_where and exists:
            if partitions and self.partition_columns(name) != list(partitions):
                kept = self.read(name)[0].where(f"NOT ({replace_where})")
                df = kept.unionByName(df, allowMissingColumns=True)
                writer = (df.write.format("delta").mode("overwrite")
                          .option("overwriteSchema", "true").partitionBy(*partitions))
                self._details.pop(name, None)  # partitioned now
            else:
                writer = writer.mode("overwrite").option("replaceWhere", replace_where)
        else:
            writer = writer.mode("overwrite").option("overwriteSchema", "true")
            if partitions:
                writer = writer.partitionBy(*partitions)
        writer.save(self.path(name))
        return self._latest_commit(name)


# ---------------------------------------------------------------------------------------------
# A table's Parquet files, read by the Python tasks themselves


def local_parquet_files(df: DataFrame) -> list[tuple[str, int]] | None:
    """(path, bytes) of every Parquet file ``df`` reads, when a Python task that reads those
    files with pyarrow gets exactly ``df``'s rows: ``df`` only selects columns of one Delta table
    version (no filter, join or expression), the table has no partition columns, no column
    mapping and no deletion vectors, and every file is on the local filesystem (a local master,
    or a mount every executor shares). Else None, as on Spark Connect, where the plan cannot be
    inspected; callers then read through Spark's scan.

    Why at all: a Python stage that needs a big column (the text) pays for Spark's Parquet
    decoding into JVM rows and then for the copy of every row into the Arrow batches it hands
    the worker. pyarrow decodes the same file straight into Arrow: the bench corpus's 360 MB of
    text in 0.44 s on one core, against 1.65 s for the JVM's scan plus 1.2 s for the handover
    (bench/RESULTS.md, session 16).
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
    filled in order): a Python task costs a fixed ~0.05 s more (the worker's set-up and its Arrow
    streams), and ten tasks for the bench corpus's ten files ended with one core waiting for the
    last one. At 1x the bench corpus (local[2]), dedup without writes, warm runs of alternating
    sessions: ten tasks 5.2-5.8 s, two 4.6-5.0 s (bench/RESULTS.md, session 16).
    """
    import heapq

    cores = max(1, spark.sparkContext.defaultParallelism)
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
    from jobs.stage import arrow_schema

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


# ---------------------------------------------------------------------------------------------
# Ledger


@dataclass
class StageReport:
    """One ledger row: what one stage did to its rows in one run."""

    run_id: str
    stage: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    rows_quarantined: int
    bytes_in: int
    bytes_out: int
    seconds: float
    config_hash: str
    input_versions: dict[str, int] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    output_rows: int | None = None  # rows written to the output table (= rows_out unless 1:N)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def check_balance(self) -> None:
        """Fail loudly unless rows in = rows out + rows dropped + rows quarantined."""
        accounted = self.rows_out + self.rows_dropped + self.rows_quarantined
        if self.rows_in != accounted:
            raise LedgerImbalance(
                f"stage {self.stage}: {self.rows_in} rows in but {accounted} accounted for "
                f"({self.rows_out} out + {self.rows_dropped} dropped {self.dropped} + "
                f"{self.rows_quarantined} quarantined)"
            )

    def as_row(self) -> dict:
        row = asdict(self)
        row["rows_dropped"] = self.rows_dropped
        return row


LEDGER_FIELDS: tuple[tuple[str, str], ...] = (
    ("run_id", "string"),
    ("stage", "string"),
    ("rows_in", "long"),
    ("rows_out", "long"),
    ("rows_dropped", "long"),
    ("dropped", "map<string,long>"),
    ("rows_quarantined", "long"),
    ("bytes_in", "long"),
    ("bytes_out", "long"),
    ("seconds", "double"),
    ("config_hash", "string"),
    ("input_versions", "map<string,long>"),
    ("output_versions", "map<string,long>"),
    ("dry_run", "boolean"),
    ("output_rows", "long"),
)


def append_ledger(lake: Lakehouse, reports: list[StageReport]) -> int:
    """Append one ops.ledger row per report and return the ledger's new version."""
    from jobs.stage import local_frame

    rows = [{name: r.as_row()[name] for name, _ in LEDGER_FIELDS} for r in reports]
    frame = local_frame(lake.spark, rows, ", ".join(f"{n} {kind}" for n, kind in LEDGER_FIELDS))
    return lake.write("ops.ledger", frame, append=True)

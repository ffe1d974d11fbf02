"""Delta table I/O for every stage: reads, writes, versions and commits.

Tables are Delta tables addressed by ``layer.name`` (``bronze.files``) and stored at
``<lakehouse>/<layer>/<name>``. Path-based, so the same code runs against a local folder, S3/ABFS,
or DBFS without a metastore.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from jobs.direct_io import WRITTEN_SCHEMA, parquet_file_writer, table_stats_columns
from jobs.schemas import CONSTRAINTS, PARTITIONS, STATS_COLUMNS, stats_columns
from jobs.session import is_connect

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


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
        if is_connect(self.spark):
            # Delta's Python DeltaTable needs a plugin in the Connect server; its SQL does not
            from pyspark.errors import AnalysisException

            try:
                self.spark.sql(f"DESCRIBE HISTORY delta.`{self.path(name)}` LIMIT 1").collect()
            except AnalysisException:
                return False
            return True
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
        found = None if is_connect(self.spark) else self._latest_commit_from_log(name)
        if found is None:  # SQL: over Spark Connect too, where DeltaTable.forPath is not served
            row = self.spark.sql(f"DESCRIBE HISTORY delta.`{self.path(name)}` LIMIT 1").select(
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
        that no later run could reuse, and the JIT kept compiling Janino itself
        (bench/RESULTS.md, "Dedup speed").
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
        job, which waits behind a stage's other writes."""
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

    def _constrained(self, name: str, version: int) -> int:
        """After a write that made ``version``: add the CHECK constraints
        ``jobs.schemas.CONSTRAINTS`` declares for the table and it lacks (a table an earlier
        version created; a new table gets them in its first commit), and return the table's
        version after them. Delta checks the rows the table holds, then every later write. The
        write's own row count stays the one ``rows_written`` reports."""
        want = CONSTRAINTS.get(name)
        if not want:
            return version
        _, properties = self._detail(name)
        table = f"delta.`{self.path(name)}`"
        added = False
        for constraint, expr in want.items():
            if f"delta.constraints.{constraint.lower()}" not in properties:
                self.spark.sql(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK ({expr})")
                properties[f"delta.constraints.{constraint.lower()}"] = expr
                added = True
        return self._commit(name)[0] if added else version

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
        output's write tasks. delta-rs reads the log on the driver (bench/RESULTS.md, "Dedup speed").
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
              append: bool = False, txn: tuple[str, int] | None = None) -> int:
        """Overwrite (or append to, or replace the ``replace_where`` slice of) a table.

        Tables in ``PARTITIONS`` are written partitioned. One that an earlier version wrote
        without those partitions is rewritten once, partitioned: its other rows and ``df``.
        ``txn``: Delta's idempotent-write pair (``txnAppId``, ``txnVersion``): a write whose pair
        the table has already committed is skipped, so a retried append adds nothing.
        """
        from pyspark.sql import functions as F

        partitions = PARTITIONS.get(name, ())
        want = stats_columns(df.schema, partitions)
        constraints = {f"delta.constraints.{c.lower()}": expr
                       for c, expr in CONSTRAINTS.get(name, {}).items()}
        exists = self.exists(name)
        if (want is not None or constraints) and not exists:
            # created with its properties and constraints, in the write's own commit
            creator = df.writeTo(f"delta.`{self.path(name)}`").using("delta")
            properties = {**({STATS_COLUMNS: want} if want is not None else {}), **constraints}
            for key, value in properties.items():
                creator = creator.tableProperty(key, value)
            if txn is not None:
                creator = creator.option("txnAppId", txn[0]).option("txnVersion", str(txn[1]))
            if partitions:
                creator = creator.partitionedBy(*[F.col(c) for c in partitions])
            creator.create()
            self._details[name] = (list(partitions), properties)
            return self._latest_commit(name)
        if want is not None:
            self._set_stats_columns(name, want)
        writer = df.write.format("delta")
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
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
        return self._constrained(name, self._latest_commit(name))

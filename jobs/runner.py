"""The runner behind ``codemill run`` and ``codemill stage`` (and so spark-submit's
``jobs/submit.py``): it takes ``Stage`` objects (``jobs.registry`` names them).

For each stage the runner reads its inputs at their latest Delta version (recorded in the ledger),
lets the stage decide every row, counts the outcomes, checks rows in = out + dropped + quarantined
*before* writing anything, then writes the output table, its slice of silver.rejects and of
ops.quarantine, and finally one ops.ledger row per stage. ``dry_run`` does everything but the
writes: later stages consume the earlier ones' in-memory output.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from jobs import registry
from jobs.arrow import local_frame
from jobs.config import (
    FILE_SOURCES,
    ChatSource,
    ConfigError,
    GitSource,
    PipelineConfig,
    TreeSource,
)
from jobs.lakehouse import Lakehouse
from jobs.ledger import StageReport, append_ledger
from jobs.schemas import schema_mismatch
from jobs.session import check_environment, default_parallelism, is_connect, spark_session
from jobs.stage import KEPT, Stage, quarantine_of, rejects_of

if TYPE_CHECKING:
    from collections.abc import Callable

    Progress = Callable[..., None]  # (stage, "i/n") at its start, (stage, "i/n", report) at its end

    from pyspark.sql import DataFrame, SparkSession

@dataclass
class RunResult:
    run_id: str
    reports: list[StageReport]
    tables: dict[str, tuple[str, int | None]]  # name → (path, version written; None in dry runs)
    run_dir: str | None
    mlflow_run_id: str | None = None  # the MLflow run that records it (jobs.tracking)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def resolve(names: list[str]) -> list[Stage]:
    """The registered stages of these names, in the order given. Raises ConfigError."""
    unknown = [s for s in names if s not in registry.STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown {', '.join(unknown)}; allowed: "
                          f"{', '.join(registry.STAGES)}")
    return [registry.STAGES[s] for s in names]


def preflight(cfg: PipelineConfig, stages: list[str]) -> None:
    """Checks that need no Spark: stage names and local source paths. Raises ConfigError."""
    resolve(stages)
    readers = {"ingest": FILE_SOURCES, "commits": (GitSource,), "chats": (ChatSource,)}
    for i, src in enumerate(cfg.ingest.sources):
        if not any(isinstance(src, kinds) and stage in stages for stage, kinds in readers.items()):
            continue
        local = "://" not in src.path and not src.path.startswith(("dbfs:", "file:"))
        if local and not Path(src.path).exists():
            hint = " (build one with: codemill corpus)" if isinstance(src, TreeSource) else ""
            raise ConfigError(f"ingest.sources.{i}.path: {src.path} does not exist{hint}")
        if local and isinstance(src, GitSource) and src.layout == "repo":
            from udfs.commits import GitUnreadable, open_repository

            try:
                open_repository(src.path)
            except GitUnreadable as exc:
                raise ConfigError(f"ingest.sources.{i}.path: {src.path} is not a readable git "
                                  f"repository ({exc})") from None
    tok = cfg.sft.tokenizer
    if "build_sft" in stages and tok and tok.startswith((".", "/", "~")) and not Path(
            tok).expanduser().exists():
        raise ConfigError(f"sft.tokenizer: {tok} does not exist (a local path; hub names like "
                          "Qwen/Qwen2.5-Coder-32B-Instruct need the model cache)")


def _totals(input_rows: DataFrame):
    """(rows, bytes) of a stage's input, as a Row of ``n`` and ``b``."""
    from pyspark.sql import functions as F

    return input_rows.agg(F.count(F.lit(1)).alias("n"), F.sum("_bytes").alias("b")).first()


def _tally(result_decided: DataFrame) -> tuple[int, int, dict[str, int], int, int]:
    """(rows kept, bytes kept, dropped by reason, bytes dropped, rows quarantined) in one
    aggregation."""
    from pyspark.sql import functions as F

    kept = kept_bytes = dropped_bytes = quarantined = 0
    dropped: dict[str, int] = {}
    rows = (result_decided.groupBy("_outcome", "_reason")
            .agg(F.count(F.lit(1)).alias("n"), F.sum("_bytes").alias("b")).collect())
    for row in rows:
        if row["_outcome"] == KEPT:
            kept, kept_bytes = kept + row["n"], kept_bytes + (row["b"] or 0)
        elif row["_outcome"] == "dropped":
            reason = row["_reason"] or "unnamed"
            dropped[reason] = dropped.get(reason, 0) + row["n"]
            dropped_bytes += row["b"] or 0
        else:
            quarantined += row["n"]
    return kept, kept_bytes, dict(sorted(dropped.items())), dropped_bytes, quarantined


# A stage's kept rows (when the output is its decided rows) and its silver.rejects and
# ops.quarantine slices are written in files of about FILE_BYTES (Spark's own split size),
# estimating a row at ROW_BYTES plus its text. Those rows are spread over every partition of the
# stage's input (ingest reads ~200 files per task); a file per partition made every later scan
# and commit pay Delta's and Parquet's per-file work for files of a few hundred rows.
FILE_BYTES = 128 << 20
ROW_BYTES = 512


def _in_few_files(df: DataFrame, rows: int, text_bytes: int) -> DataFrame:
    """``df`` coalesced to the files its estimated size needs, rounded up to a multiple of the
    cluster's default parallelism (every core keeps an equal share of the write and of later
    scans), and never more than it has."""
    cores = default_parallelism(df.sparkSession)
    need = -(-(rows * ROW_BYTES + text_bytes) // FILE_BYTES)
    return df.coalesce(-(-max(need, 1) // cores) * cores)


class SchemaContractError(RuntimeError):
    """A stage's output does not have its table's declared columns (``jobs.schemas``)."""


def _check_schemas(stage: Stage, result) -> None:
    """Raise SchemaContractError, before any job runs, when a table the stage would write differs
    from its declaration: a renamed or retyped column never reaches a Delta table (whose
    overwrites replace the schema) or a downstream reader."""
    kept = (result.output if result.output is not None
            else result.decided.select(*result.kept_columns))
    frames = {stage.output: kept, **result.extra_outputs,
              "silver.rejects": rejects_of(stage.name, result.decided, result.rejects_omit),
              "ops.quarantine": quarantine_of(stage.name, result.decided)}
    problems = [p for table, df in frames.items() if (p := schema_mismatch(table, df.schema))]
    if problems:
        raise SchemaContractError(f"stage {stage.name}: " + "; ".join(problems))


def _write_all(lake: Lakehouse, writes: dict[str, tuple[DataFrame, str | None]],
               writers: dict[str, Callable[[Lakehouse, str, DataFrame], int]] | None = None,
               ) -> dict[str, int]:
    """Write a stage's tables ({table: (frame, replace_where)}) side by side, one driver thread
    each, and return their new versions. The tables are distinct, so the Delta commits cannot
    conflict; a stage's writes overlap each other's planning, commits and single-task tails.
    The first failure is raised once all have finished. A table in ``writers`` is written by its
    function (``StageResult.writers``) instead, given the frame.

    Each write runs its jobs in a scheduler pool of its own (``spark.scheduler.pool`` = the table;
    the session's ``spark.scheduler.mode`` is FAIR, see ``jobs.session.spark_session``): with one
    FIFO queue, the small tables' Delta jobs (snapshots, the commit's checks) and their narrow
    writes waited for every task of the output table's full-text write, and ran after it
    (bench/RESULTS.md, "Dedup speed").
    """
    # a Connect client has no SparkContext: its server schedules each request as it comes
    context = None if is_connect(lake.spark) else lake.spark.sparkContext

    def write(table: str, df: DataFrame, where: str | None) -> int:
        if context is not None:
            context.setLocalProperty("spark.scheduler.pool", table)
        try:
            if table in (writers or {}):
                return writers[table](lake, table, df)
            return lake.write(table, df, replace_where=where)
        finally:
            if context is not None:
                context.setLocalProperty("spark.scheduler.pool", None)

    with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix="write") as pool:
        futures = {table: pool.submit(write, table, df, where)
                   for table, (df, where) in writes.items()}
        return {table: future.result() for table, future in futures.items()}


@dataclass
class Resumed:
    """What an interrupted run finished: its stages' ledger rows, in order."""

    reports: list[StageReport]

    @property
    def stages(self) -> list[str]:
        return [r.stage for r in self.reports]

    def versions(self) -> dict[str, int]:
        """The table versions its stages wrote (the later stage's where two wrote one)."""
        out: dict[str, int] = {}
        for r in self.reports:
            out.update(r.output_versions)
        return out


def run_stages(spark: SparkSession, cfg: PipelineConfig, stages: list[Stage], run_id: str,
               dry_run: bool = False, resumed: Resumed | None = None,
               progress: Progress | None = None) -> RunResult:
    """Run ``stages`` in order. Each stage reads a table an earlier stage of this run wrote at the
    version that stage wrote (not whatever is latest), and its ledger row is appended as soon as
    its tables are written, so an interrupted run can go on from the next stage
    (``resume_pipeline``). ``resumed``: the stages of ``run_id`` that finished before.
    ``progress``: called as ``(stage, "i/n")`` when a stage starts and ``(stage, "i/n", report)``
    when it is done."""
    from pyspark.sql import functions as F

    lake = Lakehouse(spark, cfg.lakehouse)
    produced: dict[str, DataFrame] = {}
    reports: list[StageReport] = list(resumed.reports) if resumed else []
    pinned: dict[str, int] = resumed.versions() if resumed else {}
    tables: dict[str, tuple[str, int | None]] = {t: (lake.path(t), v) for t, v in pinned.items()}
    keep_alive: list[DataFrame] = []
    if not dry_run:
        write_run_folder(lake, cfg, run_id, reports, tables)  # its config.yaml is what resumes
    done = len(reports)
    for i, stage in enumerate(stages, start=done + 1):
        name = stage.name
        position = f"{i}/{done + len(stages)}"
        if progress:
            progress(name, position)
        started = time.perf_counter()
        inputs, in_versions = {}, {}
        optional = set(stage.inputs_for(cfg)) - set(stage.inputs)
        for table in stage.inputs_for(cfg):
            if table in produced:
                inputs[table] = produced[table]
            elif table in optional and table not in pinned and not lake.exists(table):
                warnings.warn(f"stage {name}: {table} does not exist (run the stage that writes "
                              "it); this run has none of its rows", stacklevel=1)
            else:
                inputs[table], in_versions[table] = lake.read(table, pinned.get(table))
        result = stage.build(spark, cfg, inputs)
        _check_schemas(stage, result)
        # the input's totals and the outcome tally are two small jobs: side by side, neither
        # waits for the other's fixed costs (scheduling, the Delta scan's planning)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tally") as pool:
            totals_job = pool.submit(_totals, result.input_rows)
            tally_job = pool.submit(_tally, result.decided)
            totals = totals_job.result()
            kept, kept_bytes, dropped, dropped_bytes, quarantined = tally_job.result()
        report = StageReport(
            run_id=run_id, stage=name, rows_in=totals["n"], rows_out=kept, dropped=dropped,
            rows_quarantined=quarantined, bytes_in=totals["b"] or 0, bytes_out=kept_bytes,
            seconds=0.0, config_hash=cfg.config_hash(), input_versions=in_versions,
            dry_run=dry_run)
        report.check_balance()
        if result.by_source is not None:
            counts = result.by_source.collect()
            report.source_rows_in = {r["source"]: r["rows_in"] for r in counts}
            report.source_rows_out = {r["source"]: r["rows_out"] for r in counts}
        if result.output is not None:
            kept_df = result.output
            # written rows come from the Delta commit's metrics; a separate count() would run
            # the output's plan (split: the repo-FIM joins) a second time
            report.output_rows = kept_df.count() if dry_run else None
        else:
            kept_df = result.decided.where(F.col("_outcome") == KEPT).select(*result.kept_columns)
            if stage.output not in result.writers:
                kept_df = _in_few_files(kept_df, kept, kept_bytes)
            report.output_rows = kept
        if dry_run:
            produced[stage.output] = kept_df
            produced.update(result.extra_outputs)
            keep_alive.extend(result.persisted)
        else:
            slice_ = f"stage = '{name}'"
            rejects = _in_few_files(
                rejects_of(name, result.decided, result.rejects_omit), report.rows_dropped,
                0 if "text" in result.rejects_omit else dropped_bytes)
            quarantine = _in_few_files(quarantine_of(name, result.decided), quarantined,
                                       quarantined * cfg.ingest.quarantine_payload_chars)
            # nothing to write: an empty frame still replaces the slice, without re-reading input,
            # unless the slice is empty already (then the table's version is recorded as it is)
            writes = {stage.output: (kept_df, None), **{t: (df, None) for t, df in
                                                        result.extra_outputs.items()}}
            out = report.output_versions
            for table, df, rows in (("silver.rejects", rejects, report.rows_dropped),
                                    ("ops.quarantine", quarantine, quarantined)):
                unchanged = None if rows else lake.empty_slice_version(table, "stage", name)
                if unchanged is None:
                    writes[table] = (df if rows else df.limit(0), slice_)
                else:
                    out[table] = unchanged
            out.update(_write_all(lake, writes, result.writers))
            if report.output_rows is None:
                report.output_rows = lake.rows_written(stage.output)
            for table, version in out.items():
                tables[table] = (lake.path(table), version)
            pinned.update(out)
            for df in result.persisted:
                df.unpersist()
        report.seconds = round(time.perf_counter() - started, 2)
        reports.append(report)
        if progress:
            progress(name, position, report)
        if not dry_run:  # the stage is done once its row is in: a resume starts after it
            tables["ops.ledger"] = (lake.path("ops.ledger"),
                                    append_ledger(lake, [report], position=len(reports) - 1))
    run_dir = None
    if not dry_run:
        run_dir = write_run_folder(lake, cfg, run_id, reports, tables)
        if cfg.report:
            _write_report(cfg.lakehouse, run_id)
    for df in keep_alive:
        df.unpersist()
    result = RunResult(run_id, reports, tables, run_dir)
    if not dry_run:
        from jobs.tracking import log_pipeline_run

        result.mlflow_run_id = log_pipeline_run(cfg, result)
    return result


def summary_dict(result: RunResult, cfg: PipelineConfig) -> dict:
    return {
        "run_id": result.run_id,
        "config_hash": cfg.config_hash(),
        "stages": [r.as_row() for r in result.reports],
        "tables": {k: {"path": p, "version": v} for k, (p, v) in result.tables.items()},
    }


def write_run_folder(lake: Lakehouse, cfg: PipelineConfig, run_id: str,
                     reports: list[StageReport], tables: dict) -> str:
    """``<lakehouse>/_runs/<run_id>/`` with summary.json and the resolved config.yaml (and, at the
    end of a run, report.html: ``jobs.run_report``)."""
    run_dir = lake.runs_dir(run_id)
    summary = summary_dict(RunResult(run_id, reports, tables, run_dir), cfg)
    files = {
        "summary.json": json.dumps(summary, indent=2, sort_keys=True),
        "config.yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
    }
    if "://" in run_dir or run_dir.startswith("dbfs:"):
        for name, text in files.items():  # remote storage: let Spark's filesystem write it
            local_frame(lake.spark, [{"value": text}], "value string").coalesce(1).write.mode(
                "overwrite").text(f"{run_dir}/{name}")
    else:
        os.makedirs(run_dir, exist_ok=True)
        for name, text in files.items():
            Path(run_dir, name).write_text(text)
    return run_dir


def _write_report(lakehouse: str, run_id: str) -> None:
    """report.html in the run folder of a lakehouse on a local or mounted filesystem. The tables
    are written by then: a report that cannot be drawn is a warning, not a failed run."""
    if "://" in lakehouse or lakehouse.startswith("dbfs:"):
        return  # deltalake would need the store's credentials; codemill report can run later
    from jobs.run_report import write_report

    try:
        write_report(lakehouse, run_id)
    except Exception as exc:  # noqa: BLE001 - the run's data is written; say why the page is not
        warnings.warn(f"report.html for run {run_id} not written: {type(exc).__name__}: {exc}",
                      stacklevel=1)


class CannotResume(ConfigError):
    """The run to resume is unknown, or finished."""


def resume_pipeline(lakehouse: str, run_id: str, spark: SparkSession | None = None,
                    progress: Progress | None = None) -> RunResult:
    """Go on with run ``run_id`` of ``lakehouse`` from the stage after the last one whose ledger
    row it appended: with the run's own config (``_runs/<run_id>/config.yaml``), its run id, and
    its stages' table versions as the next stages' inputs."""
    from pyspark.sql import functions as F

    config = Path(lakehouse, "_runs", run_id, "config.yaml") if "://" not in lakehouse else None
    if config is None or not config.exists():
        raise CannotResume(f"--resume {run_id}: no run folder {lakehouse}/_runs/{run_id} "
                           "(codemill tables lists the lakehouse; run ids are its _runs folders)")
    cfg = PipelineConfig.model_validate(yaml.safe_load(config.read_text()))
    names = list(cfg.stages)
    preflight(cfg, names)
    if spark is None:
        check_environment(cfg.spark, cfg.lakehouse)
    session = spark or spark_session(cfg.spark)
    lake = Lakehouse(session, cfg.lakehouse)
    rows = []
    if lake.exists("ops.ledger"):
        rows = [r.asDict(recursive=True) for r in lake.read("ops.ledger")[0]
                .where((F.col("run_id") == run_id) & ~F.col("dry_run")).collect()]
    done = {r["stage"]: r for r in rows}
    finished = [n for n in names if n in done]
    if finished != names[:len(finished)]:
        raise CannotResume(f"--resume {run_id}: its ledger rows ({', '.join(done)}) are not the "
                           f"first stages of {', '.join(names)}")
    if len(finished) == len(names):
        raise CannotResume(f"--resume {run_id}: every stage finished ({', '.join(names)})")
    fields = set(StageReport.__dataclass_fields__)
    reports = [StageReport(**{k: v for k, v in done[n].items() if k in fields}) for n in finished]
    return run_stages(session, cfg, resolve(names[len(finished):]), run_id,
                      resumed=Resumed(reports), progress=progress)


def run_pipeline(cfg: PipelineConfig, stages: list[str] | None = None, dry_run: bool = False,
                 run_id: str | None = None, spark: SparkSession | None = None,
                 progress: Progress | None = None) -> RunResult:
    """Validate, start Spark (unless given one), run ``stages`` (default: ``cfg.stages``)."""
    names = list(stages or cfg.stages)
    preflight(cfg, names)
    if spark is None:
        check_environment(cfg.spark, cfg.lakehouse, writes=not dry_run)
    session = spark or spark_session(cfg.spark)
    return run_stages(session, cfg, resolve(names), run_id or new_run_id(), dry_run=dry_run,
                      progress=progress)

"""Terminal output of a run: per-stage counts, drop reasons, and where the tables are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from jobs.runner import RunResult


def stage_line(stage: str, position: str, report=None) -> str:
    """``[2/7] filter started`` / ``[2/7] filter: 37,343 in → 24,196 kept · 13,147 dropped ·
    0 quarantined · 46.3 s``: whole numbers, one line, whatever the width."""
    if report is None:
        return f"[{position}] {stage} started"
    return (f"[{position}] {stage}: {report.rows_in:,} in → {report.rows_out:,} kept · "
            f"{report.rows_dropped:,} dropped · {report.rows_quarantined:,} quarantined · "
            f"{report.seconds:.1f} s")


def print_summary(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:
        # a file or a pipe has no width to fit: never cut a number or a path to 80 columns
        console.width = max(console.width, 240)
    dry = any(r.dry_run for r in result.reports)
    title = f"codemill run {result.run_id}" + (" (dry run: nothing written)" if dry else "")
    stages = Table(title=title)
    for col in ("stage", "rows in", "kept", "dropped", "quarantined", "rows written", "MB in",
                "MB out", "seconds"):
        # stage names never wrap: a narrow terminal squeezes the numbers' headers instead
        stages.add_column(col, justify="left" if col == "stage" else "right",
                          no_wrap=True, min_width=9 if col == "stage" else None)
    for r in result.reports:
        stages.add_row(r.stage, f"{r.rows_in:,}", f"{r.rows_out:,}", f"{r.rows_dropped:,}",
                       f"{r.rows_quarantined:,}",
                       f"{r.output_rows if r.output_rows is not None else r.rows_out:,}",
                       f"{r.bytes_in / 1e6:.1f}",
                       f"{r.bytes_out / 1e6:.1f}", f"{r.seconds:.1f}")
    console.print(stages)
    reasons = Table(title="dropped by reason")
    for col in ("stage", "reason", "rows"):
        reasons.add_column(col, justify="right" if col == "rows" else "left")
    for r in result.reports:
        for reason, n in sorted(r.dropped.items(), key=lambda kv: -kv[1]):
            reasons.add_row(r.stage, reason, f"{n:,}")
    console.print(reasons)
    mixed = [r for r in result.reports if r.source_rows_in is not None]
    if mixed:
        sources = Table(title="rows per source (before → after the mixture)")
        for col in ("stage", "source", "before", "after"):
            sources.add_column(col, justify="left" if col in ("stage", "source") else "right")
        for r in mixed:
            for source, n in sorted(r.source_rows_in.items()):
                sources.add_row(r.stage, source, f"{n:,}",
                                f"{(r.source_rows_out or {}).get(source, 0):,}")
        console.print(sources)
    if result.tables:
        where = Table(title="tables")
        for col in ("table", "Delta version", "path"):
            where.add_column(col)
        for name, (path, version) in sorted(result.tables.items()):
            where.add_row(name, str(version), path)
        console.print(where)
    if result.run_dir:
        console.print(f"run folder: {result.run_dir} (summary.json, config.yaml, report.html)")
    if result.mlflow_run_id:
        console.print(f"MLflow run: {result.mlflow_run_id} (codemill ui to browse)")

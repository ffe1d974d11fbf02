"""The ``codemill`` command.

    codemill corpus --out data/corpus            # build a real corpus from this machine's code
    codemill run                                 # every stage, local defaults
    codemill run --language python --max-samples 1000 --min-stars 10 --dry-run
    codemill run --resume 20261206T013921Z-3dea00   # an interrupted run, from its next stage
    codemill stage filter --set filter.params.min_lines=5
    codemill tables                              # tables, Delta versions, row counts
    codemill report --run 20261206T013921Z-3dea00   # rebuild a run's report.html
    codemill ui                                  # MLflow UI: pipeline and training runs
    codemill export silver.files --format jsonl --out exports/silver_files
    codemill checksums --out sums.json           # content checksums of every table (rerun checks)
    codemill jars                                # Delta jars for spark-submit --jars

The training commands (plan, train, launch, merge, eval) are defined in ``training.cli``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs.config import ConfigError, PipelineConfig, load_config
from training.cli import app as training_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="codemill: source code → training data, on Spark and Delta. "
                       "--debug (anywhere): full tracebacks on failure.")
console = Console()

ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="base YAML (default conf/pipeline.yaml)")]
EnvOpt = Annotated[str, typer.Option("--env", envvar="CODEMILL_ENV",
                                      help="overlay conf/env/<env>.yaml ('' for none)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override: dotted.key=value")]
LangOpt = Annotated[Optional[list[str]], typer.Option("--language", help="keep only this language (repeatable)")]
MaxOpt = Annotated[Optional[int], typer.Option("--max-samples", help="keep at most N files")]
StarsOpt = Annotated[Optional[int], typer.Option("--min-stars", help="minimum repository stars")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="count what each stage keeps and drops; write nothing")]


def curation_overrides(languages: list[str] | None = None, max_samples: int | None = None,
                       min_stars: int | None = None) -> list[str]:
    """The seed's curation flags as ``--set`` overrides."""
    out = []
    if languages:
        out.append(f"filter.params.languages=[{', '.join(languages)}]")
    if max_samples is not None:
        out.append(f"filter.max_samples={max_samples}")
    if min_stars is not None:
        out.append(f"filter.params.min_stars={min_stars}")
    return out


def _config(config, env, overrides, languages=None, max_samples=None, min_stars=None) -> PipelineConfig:
    try:
        return load_config(config, env=env or None, overrides=list(overrides or []) +
                           curation_overrides(languages, max_samples, min_stars))
    except ConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


def stage_lines(out: Console | None = None):
    """The runner's progress callback: a line when a stage starts and one when it ends, on
    stderr (stdout holds the results: the summary, or the one-line error)."""
    out = out or Console(stderr=True)
    from jobs.report import stage_line

    def show(stage: str, position: str, report=None) -> None:
        out.print(stage_line(stage, position, report), highlight=False, soft_wrap=True)

    return show


def _run(stages, config, env, overrides, languages, max_samples, min_stars, dry_run) -> None:
    from jobs.report import print_summary
    from jobs.runner import run_pipeline

    cfg = _config(config, env, overrides, languages, max_samples, min_stars)
    try:
        result = run_pipeline(cfg, stages, dry_run=dry_run, progress=stage_lines())
    except ConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    print_summary(result, console)


@app.command()
def run(config: ConfigOpt = None, env: EnvOpt = "local", set_: SetOpt = None,
        language: LangOpt = None, max_samples: MaxOpt = None, min_stars: StarsOpt = None,
        dry_run: DryOpt = False,
        resume: Annotated[Optional[str], typer.Option(
            "--resume", help="go on with this interrupted run (its id: a folder of "
                             "<lakehouse>/_runs) from its first unfinished stage, with its own "
                             "config")] = None) -> None:
    """Run every stage of the pipeline (conf 'stages') and print the ledger summary."""
    if resume is None:
        _run(None, config, env, set_, language, max_samples, min_stars, dry_run)
        return
    from jobs.report import print_summary
    from jobs.runner import resume_pipeline

    lakehouse = _config(config, env, set_).lakehouse  # where the run is; the rest is the run's
    try:
        result = resume_pipeline(lakehouse, resume, progress=stage_lines())
    except ConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    print_summary(result, console)


@app.command()
def stage(name: Annotated[str, typer.Argument(
              help="stage name: ingest, filter, dedup, split, commits, chats, build_sft")],
          config: ConfigOpt = None, env: EnvOpt = "local", set_: SetOpt = None,
          language: LangOpt = None, max_samples: MaxOpt = None, min_stars: StarsOpt = None,
          dry_run: DryOpt = False) -> None:
    """Run one stage, reading its inputs from their tables."""
    _run([name], config, env, set_, language, max_samples, min_stars, dry_run)


@app.command()
def corpus(out: Annotated[str, typer.Option(help="folder to (re)write")] = "data/corpus",
           stdlib: Annotated[bool, typer.Option(help="the Python standard library")] = True,
           stdlib_tests: Annotated[bool, typer.Option(help="include the stdlib's test suite")] = False,
           site_packages: Annotated[bool, typer.Option(help="installed distributions")] = True,
           dist: Annotated[Optional[list[str]], typer.Option(help="only this installed distribution (repeatable)")] = None,
           tree: Annotated[Optional[list[str]], typer.Option(help="another source tree or git repo")] = None) -> None:
    """Build a corpus of real code from this machine (one folder per repo)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from jobs.corpus import build_corpus

    # a live count in a terminal; a file or a pipe gets the one summary line below
    with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                  TextColumn("{task.completed:,} files"), TimeElapsedColumn(), console=console,
                  disable=not console.is_terminal, transient=True) as bar:
        task = bar.add_task(f"copying code into {out}", total=None)

        def copied(repo: str) -> None:
            bar.update(task, advance=1, description=f"copying code into {out}: {repo}")

        s = build_corpus(out, stdlib=stdlib, site_packages=site_packages, trees=tree or [],
                         stdlib_tests=stdlib_tests, distributions=dist, on_file=copied)
    console.print(f"corpus at {s.out}: {len(s.repos)} repos, {s.files:,} files, "
                  f"{s.bytes / 1e6:.1f} MB")


@app.command()
def tables(lakehouse: Annotated[Optional[str], typer.Option(help="lakehouse root (default: from config)")] = None,
           config: ConfigOpt = None, env: EnvOpt = "local") -> None:
    """List the lakehouse's Delta tables with row counts and versions (no Spark needed)."""
    from jobs.catalog import list_tables

    root = lakehouse or _config(config, env, []).lakehouse
    found = list_tables(root)
    t = Table(title=f"tables under {root}")
    for col in ("table", "rows", "version", "path", "what"):
        # table names never shrink or wrap: narrow terminals squeeze path and description instead
        t.add_column(col, justify="right" if col in ("rows", "version") else "left",
                     no_wrap=col == "table", min_width=19 if col == "table" else None)
    for info in found:
        t.add_row(info.name, f"{info.rows:,}", str(info.version), info.path, info.description)
    console.print(t if found else f"no Delta tables under {root}")


@app.command()
def report(run_id: Annotated[Optional[str], typer.Option(
               "--run", help="run id (a folder of <lakehouse>/_runs; default: the latest)")] = None,
           lakehouse: Annotated[Optional[str], typer.Option(
               help="lakehouse root (default: from config)")] = None,
           config: ConfigOpt = None, env: EnvOpt = "local") -> None:
    """(Re)write a run's report.html from its summary and tables (no Spark needed)."""
    from jobs.run_report import write_report

    root = lakehouse or _config(config, env, []).lakehouse
    try:
        path = write_report(root, run_id)
    except FileNotFoundError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    console.print(f"report: {path}")


@app.command()
def ui(port: Annotated[int, typer.Option(help="port to serve on")] = 5000,
       host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
       lakehouse: Annotated[Optional[str], typer.Option(
           help="lakehouse root (default: from config)")] = None,
       config: ConfigOpt = None, env: EnvOpt = "local") -> None:
    """Serve the MLflow UI on the lakehouse's store: pipeline runs and training runs side by
    side (with MLFLOW_TRACKING_URI set, open that server instead)."""
    import os

    from udfs.tracking import tracking_uri

    cfg = _config(config, env, [])
    uri = tracking_uri(lakehouse or cfg.lakehouse, cfg.mlflow.tracking_uri)
    if uri is None or uri.startswith(("http:", "https:", "databricks")):
        console.print(f"runs are kept by {uri or 'the MLflow default store'}: open it there")
        raise typer.Exit(0)
    console.print(f"MLflow UI for {uri} at http://{host}:{port}")
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", host, "--port", str(port)])


@app.command()
def export(table: Annotated[str, typer.Argument(help="layer.table, e.g. silver.files")],
           format: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
           out: Annotated[str, typer.Option("--out", help="output folder")] = "exports",
           version: Annotated[Optional[int], typer.Option(help="Delta version (default latest)")] = None,
           lakehouse: Annotated[Optional[str], typer.Option(help="lakehouse root")] = None,
           split: Annotated[Optional[str], typer.Option(
               help="gold.sft only: export just this split (train or eval)")] = None,
           config: ConfigOpt = None, env: EnvOpt = "local") -> None:
    """Export a table at a Delta version to JSONL or Parquet shards with a manifest.

    gold.sft as JSONL is written in the chat format trainers read: one {"messages": [...]} per
    line (tool_calls only where present)."""
    from jobs.catalog import export_table

    if format not in ("jsonl", "parquet"):
        console.print(f"[red]--format: got {format!r}; allowed: jsonl, parquet[/red]")
        raise typer.Exit(2)
    root = lakehouse or _config(config, env, []).lakehouse
    try:
        m = export_table(root, table, format, out, version=version, split=split)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{table}@{m['delta_version']}: {m['rows']:,} rows in {len(m['files'])} "
                  f"{format} file(s) under {out} (manifest.json)")


@app.command()
def checksums(table: Annotated[Optional[list[str]], typer.Argument(
                  help="layer.table (default: every table but ops.ledger)")] = None,
              exclude: Annotated[Optional[list[str]], typer.Option(
                  help="leave this column out (repeatable)")] = None,
              out: Annotated[Optional[str], typer.Option(help="also write them to this JSON file")] = None,
              lakehouse: Annotated[Optional[str], typer.Option(help="lakehouse root")] = None,
              config: ConfigOpt = None, env: EnvOpt = "local") -> None:
    """Checksums of tables' sorted rows: equal for equal content, whatever the files or row order.

    ops.ledger is left out by default: its rows record when and how long, which every run changes."""
    import json

    from jobs.catalog import list_tables, table_checksum

    root = lakehouse or _config(config, env, []).lakehouse
    names = table or [t.name for t in list_tables(root) if t.name != "ops.ledger"]
    sums = []
    for name in names:
        try:
            sums.append(table_checksum(root, name, exclude=tuple(exclude or ())))
        except FileNotFoundError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(1) from None
        s = sums[-1]
        print(f"{s['sha256']}  {s['table']}@{s['version']}  {s['rows']:,} rows")
    if out:
        with open(out, "w") as f:
            json.dump(sums, f, indent=2)
            f.write("\n")


@app.command()
def jars(config: ConfigOpt = None, env: EnvOpt = "local") -> None:
    """Resolve Delta's jars with Maven and print them comma-separated (for spark-submit --jars)."""
    from jobs.session import resolve_delta_jars

    print(",".join(resolve_delta_jars(_config(config, env, []).spark.jars_dir)))


# the training commands (plan, train, launch, merge, eval) live with training/
app.registered_commands.extend(training_app.registered_commands)


def _short(exc: BaseException) -> str:
    """An error in a line or two: its type and the first line of its message (a JVM error's
    message is its whole stack trace)."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first[:400]}" if first else type(exc).__name__


def main() -> None:
    """Every command; ``--debug`` anywhere on the line shows a failure's Python traceback, which is
    otherwise one line naming the error (config and environment errors always are)."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the one place a failure meets a person
        if debug:
            raise
        console.print(f"[red]error: {escape(_short(exc))}[/red]\n"
                      "(the full traceback: run the same command with --debug)")
        sys.exit(1)


if __name__ == "__main__":
    main()

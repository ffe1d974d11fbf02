"""The run summary printed to a file or a pipe keeps every number whole."""

from __future__ import annotations

import io

from rich.console import Console

from jobs.ledger import StageReport
from jobs.report import print_summary
from jobs.runner import RunResult


def test_numbers_are_never_cut_when_not_a_terminal():
    report = StageReport(run_id="r", stage="ingest", rows_in=37_785, rows_out=37_343,
                         dropped={"unsupported_extension": 441}, rows_quarantined=1,
                         bytes_in=499_216_132, bytes_out=494_989_297, seconds=30.47,
                         config_hash="h", output_rows=37_343)
    out = io.StringIO()
    path = "/a/rather/long/lakehouse/path/that/would/not/fit/eighty/columns/bronze/files"
    print_summary(RunResult("r", [report], {"bronze.files": (path, 0)}, None),
                  Console(file=out))  # a file: not a terminal, 80 columns by default
    text = out.getvalue()
    for number in ("37,785", "37,343", "441", "499.2", "495.0", "30.5"):
        assert number in text, text
    assert path in text and "…" not in text


def test_rows_per_source_before_and_after_the_mixture():
    report = StageReport(run_id="r", stage="build_sft", rows_in=10, rows_out=7,
                         dropped={"mixture": 3}, rows_quarantined=0, bytes_in=0, bytes_out=0,
                         seconds=1.0, config_hash="h", output_rows=9,
                         source_rows_in={"code": 12_345, "git": 40, "chat": 7},
                         source_rows_out={"code": 3_001, "git": 40, "chat": 7})
    out = io.StringIO()
    print_summary(RunResult("r", [report], {}, None), Console(file=out))
    lines = [" ".join(ln.replace("│", " ").split()) for ln in out.getvalue().splitlines()]
    assert "build_sft code 12,345 3,001" in lines
    assert "build_sft git 40 40" in lines and "build_sft chat 7 7" in lines


def test_stage_lines_start_and_end_with_whole_numbers():
    from jobs.report import stage_line

    report = StageReport(run_id="r", stage="filter", rows_in=1_234_567, rows_out=1_000_000,
                         dropped={"too_few_lines": 234_000, "license_unknown": 567},
                         rows_quarantined=0, bytes_in=0, bytes_out=0, seconds=46.31,
                         config_hash="h")
    assert stage_line("filter", "2/7") == "[2/7] filter started"
    assert stage_line("filter", "2/7", report) == (
        "[2/7] filter: 1,234,567 in → 1,000,000 kept · 234,567 dropped · 0 quarantined · 46.3 s")

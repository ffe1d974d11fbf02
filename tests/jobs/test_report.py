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

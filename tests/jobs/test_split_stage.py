"""The split stage on Spark: samples from every language, fallback, quarantine, ledger, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.lakehouse import Lakehouse
from jobs.runner import run_pipeline
from tests.conftest import make_config
from udfs.languages import language_for_path
from udfs.records import file_id
from udfs.split import split_file

FIXTURES = Path(__file__).resolve().parents[1] / "udfs" / "fixtures" / "split"
SCHEMA = ("id string, repo string, path string, language string, license string, stars long, "
          "text string, size_bytes long")


def row(repo: str, path: str, text: str, language: str | None = None) -> dict:
    return {"id": file_id(repo, path, text.encode()), "repo": repo, "path": path,
            "language": language or language_for_path(path), "license": "mit", "stars": 1,
            "text": text, "size_bytes": len(text.encode())}


ROWS = [row("shop", p.name, p.read_text()) for p in sorted(FIXTURES.iterdir())] + [
    row("odd", "broken.py", "def (:\n  ))) class\n\nlorem ipsum dolor\nsit amet\n"),
    row("odd", "one_line.py", "x = (\n"),
    row("odd", "deep.js", "var x = " + "[" * 5000 + "]" * 5000 + ";\n"),
    row("odd", "notes.rb", "def hello\n  puts 1\nend\n\ndef bye\n  puts 2\nend\n", "ruby"),
]
ID = {r["path"]: r["id"] for r in ROWS}
SETTINGS = ("split.params.fim_rate=1.0", "split.params.max_samples_per_file=100",
            "split.repo_fim_rate=0.5")


@pytest.fixture
def unique_files(spark, lakehouse):
    df = spark.createDataFrame([tuple(r[c.split(" ")[0]] for c in SCHEMA.split(", "))
                                for r in ROWS], SCHEMA)
    Lakehouse(spark, lakehouse).write("silver.unique_files", df)
    return lakehouse


def table(lakehouse: str, name: str) -> list[dict]:
    return DeltaTable(f"{lakehouse}/{name.replace('.', '/')}").to_pyarrow_table().to_pylist()


def test_split_stage_accounts_for_every_file(spark, unique_files):
    cfg = make_config(unique_files, *SETTINGS)
    [report] = run_pipeline(cfg, ["split"], spark=spark).reports
    assert (report.rows_in, report.rows_out, report.dropped, report.rows_quarantined) == (
        len(ROWS), len(ROWS) - 2, {"unsplittable": 1}, 1)

    samples = table(unique_files, "gold.samples")
    assert report.output_rows == len(samples)
    # the stage writes exactly what udfs.split makes of each file (FIM rendering aside)
    params = cfg.split.params
    for r in ROWS:
        want = split_file(r["text"], r["language"], r["path"], r["id"], params).samples
        got = sorted((s for s in samples if s["file_id"] == r["id"]),
                     key=lambda s: s["sample_id"])
        want = sorted(want, key=lambda s: s["sample_id"])
        assert [s["sample_id"] for s in got] == [s["sample_id"] for s in want], r["path"]
        for g, w in zip(got, want):
            assert (g["target"], g["middle"], g["context"]) == (w["target"], w["middle"],
                                                                  w["context"])
            assert {k: list(v) for k, v in g["spans"]} == w["spans"]
    by_path = {}
    for s in samples:
        by_path.setdefault(s["path"], set()).add(s["task_type"])
    assert by_path["inventory.py"] >= {"function_completion", "class_completion", "docstring"}
    assert by_path["broken.py"] == by_path["notes.rb"] == {"line_completion"}
    assert {s["parse_status"] for s in samples if s["path"] == "notes.rb"} == {"no_grammar"}
    assert {s["parse_status"] for s in samples if s["path"] == "broken.py"} == {"error"}

    [quarantined] = [q for q in table(unique_files, "ops.quarantine") if q["stage"] == "split"]
    assert quarantined["source"] == "odd/deep.js"
    assert quarantined["error"].startswith("too_deep: bracket nesting 5000 > max_nesting=256")
    [reject] = [r for r in table(unique_files, "silver.rejects") if r["stage"] == "split"]
    assert (reject["path"], reject["reason"], reject["text"]) == ("one_line.py", "unsplittable",
                                                                  "x = (\n")
    skips = table(unique_files, "gold.sample_skips")
    assert {(s["path"], s["symbol"], s["reason"]) for s in skips} >= {
        ("queue.ts", "JobQueue.constructor", "target_too_short"),
        ("shapes.cpp", "Circle.Circle", "target_too_short")}


def test_repo_level_fim_and_determinism(spark, unique_files):
    cfg = make_config(unique_files, *SETTINGS)
    run_pipeline(cfg, ["split"], spark=spark)
    first = sorted(table(unique_files, "gold.samples"), key=lambda s: s["sample_id"])
    run_pipeline(cfg, ["split"], spark=spark)
    second = sorted(table(unique_files, "gold.samples"), key=lambda s: s["sample_id"])
    assert first == second

    repo = [s for s in first if s["task_type"] == "fim_repo"]
    assert repo, "repo_fim_rate 0.5 over ~20 FIM samples chose none"
    files = {r["path"]: r for r in ROWS}
    for s in repo:
        paths = sorted(p for p, r in files.items() if r["repo"] == s["repo"])
        before = paths[:paths.index(s["path"])][-2:]
        head = f"<|repo_name|>{s['repo']}\n" + "".join(
            f"<|file_sep|>{p}\n{files[p]['text']}" for p in before)
        assert s["rendered"].startswith(head)
        tail = s["rendered"][len(head):]
        assert tail.startswith(f"<|file_sep|>{s['path']}\n<|fim_")
        assert s["prefix"] + s["middle"] + s["suffix"] == files[s["path"]]["text"]
    # the rest of the FIM samples keep the file-level rendering
    plain = [s for s in first if s["task_type"] == "fim"]
    assert plain and all(s["rendered"].startswith("<|fim_prefix|>") for s in plain)
    json.dumps(first, default=str)  # every column is plain data

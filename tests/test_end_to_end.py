"""``codemill`` as a person runs it: corpus → run → tables → export, in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.schemas import TABLE_SCHEMAS, columns

BIN = Path(sys.executable).parent


def codemill(*args: str, cwd: Path) -> str:
    """stdout, then stderr (the stage progress lines)."""
    done = subprocess.run([str(BIN / "codemill"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + "\n" + done.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A small real corpus: three installed distributions plus one hand-made repo."""
    root = tmp_path_factory.mktemp("e2e")
    out = codemill("corpus", "--out", str(root / "corpus"), "--no-stdlib",
                   "--dist", "typer", "--dist", "shellingham", "--dist", "pluggy", cwd=root)
    assert "corpus at" in out
    mine = root / "corpus" / "mine"
    mine.mkdir()
    (mine / "LICENSE").write_text("Permission is hereby granted, free of charge, to any person\n")
    (mine / "latin1.py").write_bytes(b"# r\xe9sum\xe9\nx = 1\n")
    return root


def _spark_type(t) -> str:
    """A Delta log type (JSON) as Spark's simpleString."""
    if isinstance(t, str):
        return {"long": "bigint", "integer": "int", "short": "smallint", "byte": "tinyint"}.get(t, t)
    if t["type"] == "array":
        return f"array<{_spark_type(t['elementType'])}>"
    if t["type"] == "map":
        return f"map<{_spark_type(t['keyType'])},{_spark_type(t['valueType'])}>"
    return "struct<" + ",".join(f"{f['name']}:{_spark_type(f['type'])}" for f in t["fields"]) + ">"


def test_run_tables_export(workdir):
    lake = workdir / "lakehouse"
    sets = ["--set", f"lakehouse={lake}",
            "--set", f"ingest.sources=[{{kind: tree, path: '{workdir / 'corpus'}'}}]",
            "--set", "spark.master=local[2]"]
    out = codemill("run", *sets, cwd=workdir)
    for stage in ("ingest", "filter", "dedup", "split", "build_sft", "run folder:"):
        assert stage in out
    # a pipe gets plain lines on stderr: each stage's start, and its end with whole numbers
    lines = out.splitlines()
    assert "[1/7] ingest started" in lines and "[7/7] build_sft started" in lines
    [ingest_done] = [ln for ln in lines if ln.startswith("[1/7] ingest: ")]
    assert " kept · " in ingest_done and ingest_done.endswith(" s") and "…" not in out

    [run_dir] = (lake / "_runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (run_dir / "config.yaml").exists() and (run_dir / "report.html").exists()
    by_stage = {s["stage"]: s for s in summary["stages"]}
    assert f"[1/7] ingest: {by_stage['ingest']['rows_in']:,} in → " in out
    by_stage = {s["stage"]: s for s in summary["stages"]}
    for s in by_stage.values():
        assert s["rows_in"] == s["rows_out"] + s["rows_dropped"] + s["rows_quarantined"]
    assert by_stage["ingest"]["rows_quarantined"] == 1  # latin1.py
    assert by_stage["filter"]["rows_in"] == by_stage["ingest"]["rows_out"]
    assert by_stage["filter"]["rows_out"] > 0
    assert by_stage["dedup"]["rows_in"] == by_stage["filter"]["rows_out"]
    assert by_stage["dedup"]["rows_out"] > 0
    assert by_stage["split"]["rows_in"] == by_stage["dedup"]["rows_out"]
    samples = DeltaTable(str(lake / "gold" / "samples"))
    assert by_stage["split"]["output_rows"] == samples.to_pyarrow_table(
        columns=["sample_id"]).num_rows > by_stage["split"]["rows_out"] > 0
    assert by_stage["build_sft"]["rows_in"] == by_stage["split"]["output_rows"]
    assert by_stage["build_sft"]["output_rows"] > by_stage["build_sft"]["rows_out"] > 0

    ledger = DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    assert {r["stage"] for r in ledger} == {"ingest", "filter", "dedup", "split", "commits",
                                            "chats", "build_sft"}
    for row in ledger:
        assert row["run_id"] == summary["run_id"]
        assert row["rows_in"] == row["rows_out"] + row["rows_dropped"] + row["rows_quarantined"]
        assert sum(v for _, v in row["dropped"]) == row["rows_dropped"]
        for table, version in row["output_versions"]:
            assert DeltaTable(str(lake / table.replace(".", "/"))).version() >= version
    # every table the run wrote has the columns jobs/schemas.py declares, read from Delta's log
    written = {f"{p.parent.parent.name}.{p.parent.name}": p.parent
               for p in lake.glob("*/*/_delta_log")}
    assert set(written) >= {"bronze.files", "silver.unique_files", "gold.sft", "ops.ledger"}
    for name, path in written.items():
        fields = json.loads(DeltaTable(str(path)).schema().to_json())["fields"]
        assert [(f["name"], _spark_type(f["type"])) for f in fields] == columns(
            TABLE_SCHEMAS[name]), name
    silver = DeltaTable(str(lake / "silver" / "files"))
    assert silver.version() == summary["tables"]["silver.files"]["version"]
    repos = set(silver.to_pyarrow_table(columns=["repo"])["repo"].to_pylist())
    assert {"typer", "shellingham", "pluggy"} <= repos

    listing = codemill("tables", "--lakehouse", str(lake), cwd=workdir)
    for table in ("bronze.files", "silver.files", "silver.unique_files", "silver.dup_clusters",
                  "gold.samples", "gold.sample_skips", "gold.sft", "gold.sft_skips",
                  "silver.rejects", "ops.quarantine", "ops.ledger"):
        assert table in listing

    # A second run over the same input writes new versions of the same rows.
    codemill("run", *sets, cwd=workdir)
    assert silver.version() < DeltaTable(str(lake / "silver" / "files")).version()

    for fmt in ("jsonl", "parquet"):
        dest = workdir / f"export-{fmt}"
        codemill("export", "silver.files", "--format", fmt, "--out", str(dest),
                 "--version", str(summary["tables"]["silver.files"]["version"]),
                 "--lakehouse", str(lake), cwd=workdir)
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["rows"] == by_stage["filter"]["rows_out"]
        assert manifest["delta_version"] == summary["tables"]["silver.files"]["version"]
    lines = (workdir / "export-jsonl" / "part-00000.jsonl").read_text().splitlines()
    exported_ids = sorted(json.loads(line)["id"] for line in lines)
    assert exported_ids == sorted(silver.to_pyarrow_table(columns=["id"])["id"].to_pylist())

    codemill("export", "gold.samples", "--format", "jsonl", "--out", str(workdir / "samples"),
             "--lakehouse", str(lake), cwd=workdir)
    rows = [json.loads(line) for line in (workdir / "samples" / "part-00000.jsonl").open()]
    assert len(rows) == by_stage["split"]["output_rows"]
    fim = next(r for r in rows if r["task_type"] == "fim")
    assert sorted(fim["spans"]) == ["middle", "prefix", "suffix"]  # a JSON object, not pairs
    assert fim["spans"]["prefix"][1] == fim["spans"]["middle"][0]

    codemill("export", "gold.sft", "--format", "jsonl", "--split", "train",
             "--out", str(workdir / "sft"), "--lakehouse", str(lake), cwd=workdir)
    chats = [json.loads(line) for line in (workdir / "sft" / "part-00000.jsonl").open()]
    assert chats and all(list(c) == ["messages"] for c in chats)
    assert [m["role"] for m in chats[0]["messages"]] == ["system", "user", "assistant"]


def test_bad_config_fails_before_spark_naming_the_key(workdir):
    done = subprocess.run([str(BIN / "codemill"), "run", "--set", "filter.params.min_starz=1"],
                          cwd=workdir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "filter.params.min_starz: unknown key" in done.stdout
    assert "Spark" not in done.stdout + done.stderr


def test_dry_run_writes_nothing(workdir):
    lake = workdir / "dry-lakehouse"
    out = codemill("run", "--dry-run", "--language", "python", "--max-samples", "5",
                   "--set", f"lakehouse={lake}",
                   "--set", f"ingest.sources=[{{kind: tree, path: '{workdir / 'corpus'}'}}]",
                   "--set", "spark.master=local[2]", cwd=workdir)
    assert "dry run: nothing written" in out
    assert "over_max_samples" in out
    assert not lake.exists()

"""The stages under spark-submit on local-cluster[2,1,1024]: two real executor JVMs that get the
project's code shipped to them, and Delta jars passed with --jars as on a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.config import load_config
from jobs.session import resolve_delta_jars

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[1]
MASTER = "local-cluster[2,1,1024]"


def spark_submit(script: str, *args: str, env: dict | None = None, master: str = MASTER) -> str:
    jars = ",".join(resolve_delta_jars(load_config().spark.jars_dir))
    env = {**os.environ, **(env or {}), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", master, "--jars", jars,
           "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false",
           "--conf", "spark.databricks.delta.snapshotPartitions=2",
           "--conf", "spark.executor.memory=768m", str(REPO / script), *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


def test_executors_import_shipped_code():
    out = spark_submit("tests/cluster_probe.py", "spark.master=null")
    probe = json.loads(out.strip().splitlines()[-1])
    assert probe["executors"] == ["0", "1"]
    assert all("codemill_code.zip" in m for m in probe["modules"]), probe["modules"]


def test_stages_via_spark_submit(tmp_path):
    repo = tmp_path / "trees" / "demo"
    repo.mkdir(parents=True)
    (repo / "LICENSE").write_text("Permission is hereby granted, free of charge, to any person\n")
    body = "def f(alpha, beta):\n" + "    total = alpha + beta  # add\n" * 12
    for i in range(40):
        (repo / f"m{i:02d}.py").write_text(body + f"# file {i}\n")
    (repo / "short.py").write_text("x = 1\n")
    fixtures = REPO / "tests" / "udfs" / "fixtures" / "split"
    for name in ("stack.go", "matrix.rs"):  # split parses these with grammar wheels on executors
        (repo / name).write_text((fixtures / name).read_text())
    (repo / "bad.py").write_bytes(b"# \xff\n")
    lake = tmp_path / "lakehouse"
    common = ["--env", "cluster", "--set", f"lakehouse={lake}",
              "--set", f"ingest.sources=[{{kind: tree, path: '{tmp_path / 'trees'}'}}]",
              "--set", "spark.shuffle_partitions=4"]
    # one stage alone, then the next three as one run: each submit starts a cluster of JVMs
    spark_submit("jobs/submit.py", "stage", "ingest", *common)
    spark_submit("jobs/submit.py", "run", *common, "--set", "stages=[filter, dedup, split]",
                 "--set", "split.params.fim_rate=0")

    ledger = DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    got = {r["stage"]: (r["rows_in"], r["rows_out"], dict(r["dropped"]), r["rows_quarantined"])
           for r in ledger}
    assert got == {"ingest": (45, 43, {"unsupported_extension": 1}, 1),
                   "filter": (43, 42, {"too_few_lines": 1}, 0),
                   # the 40 files differ in one comment: one near-duplicate cluster
                   "dedup": (42, 3, {"near_duplicate": 39}, 0),
                   "split": (3, 3, {}, 0)}
    silver = DeltaTable(str(lake / "silver" / "files")).to_pyarrow_table(columns=["path"])
    assert sorted(silver["path"].to_pylist()) == sorted(
        [f"m{i:02d}.py" for i in range(40)] + ["matrix.rs", "stack.go"])
    # representative: equal license and stars, so the highest alpha fraction ("# file 0" has one
    # digit fewer than "# file 10"), then the first path
    unique = DeltaTable(str(lake / "silver" / "unique_files")).to_pyarrow_table(columns=["path"])
    assert sorted(unique["path"].to_pylist()) == ["m00.py", "matrix.rs", "stack.go"]
    [cluster] = DeltaTable(str(lake / "silver" / "dup_clusters")).to_pyarrow_table().to_pylist()
    assert (cluster["kind"], cluster["size"]) == ("near", 40)

    samples = DeltaTable(str(lake / "gold" / "samples")).to_pyarrow_table(
        columns=["path", "task_type", "symbol", "parse_status"]).to_pylist()
    completions = {(r["path"], r["symbol"]) for r in samples
                   if r["task_type"] == "function_completion"}
    assert completions == {("m00.py", "f"), ("stack.go", "Stack.Push"), ("stack.go", "Stack.Pop"),
                           ("stack.go", "New"), ("matrix.rs", "Matrix.zeros"),
                           ("matrix.rs", "Matrix.get"), ("matrix.rs", "Matrix.set"),
                           ("matrix.rs", "Matrix.fmt"), ("matrix.rs", "trace")}
    assert {r["parse_status"] for r in samples} == {"ok"}

"""Every notebook under notebooks/ runs against a small lakehouse built here: as a plain Python
script (widgets from environment variables, figures saved as PNG), and one of them in-process the
way Databricks runs it (widgets through ``dbutils``, output through ``display``; both stand-ins,
as Databricks cannot run here)."""

from __future__ import annotations

import builtins
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.runner import run_pipeline
from tests.conftest import make_config
from tests.gitrepo import build as build_repo
from tests.jobs.test_sources import chat_files
from tests.test_idempotency import STAGES, corpus

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HEADER = "# Databricks notebook source\n"


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """Tables from a tree, a git repository and chat exports; two training runs in MLflow."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("notebooks")
    tree = corpus(root / "corpus")
    repo, _, _ = build_repo(root)
    chats = chat_files(root)
    lakehouse = str(root / "lake")
    sources = (f"ingest.sources=[{tree.split('=', 1)[1][1:-1]}, "
               f"{{kind: git, path: '{repo}'}}, {{kind: chat, path: '{chats}'}}]")
    result = run_pipeline(make_config(lakehouse, sources, "report=true", "mlflow.enabled=true"),
                          STAGES, spark=spark)
    from udfs.tracking import experiment_id, tracking_uri

    client = MlflowClient(tracking_uri(lakehouse))
    experiment = experiment_id(client, "codemill-lora", lakehouse)
    for name, lr, slope in (("lr-1e-4", "0.0001", 0.05), ("lr-3e-4", "0.0003", 0.1)):
        run = client.create_run(experiment, run_name=name)
        client.log_param(run.info.run_id, "train.learning_rate", lr)
        client.log_param(run.info.run_id, "lora.r", "16")
        for step in range(1, 11):
            client.log_metric(run.info.run_id, "loss", 3.0 - slope * step, step=step)
        client.set_terminated(run.info.run_id)
    return lakehouse, result


def test_every_notebook_is_in_databricks_source_format():
    found = sorted(p.name for p in NOTEBOOKS.glob("*.py") if p.read_text().startswith(HEADER))
    assert found == ["duplicates.py", "run.py", "sft.py", "training_runs.py"]
    for name in found:
        text = (NOTEBOOKS / name).read_text()
        assert "# COMMAND ----------" in text and "# MAGIC %md" in text
        assert "nb.widget(" in text, name  # parameters are widgets


@pytest.mark.parametrize("name, says, figures", [
    ("run.py", ["stages", "quarantined"], ["funnel", "drops"]),
    ("duplicates.py", ["representative", "Jaccard"], ["cluster_sizes"]),
    ("sft.py", ["=== git", "=== chat", "=== code"], ["quality", "weight"]),
    ("training_runs.py", ["2 runs in codemill-lora", "lr-3e-4", "train.learning_rate"],
     ["loss"]),
])
def test_notebook_runs_as_a_script(lake, tmp_path, name, says, figures):
    lakehouse, result = lake
    env = {**os.environ, "CODEMILL_LAKEHOUSE": lakehouse, "CODEMILL_NOTEBOOK_OUT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, str(NOTEBOOKS / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for text in says:
        assert text in done.stdout, (text, done.stdout[-3000:])
    stem = name[:-3]
    for figure in figures:
        [png] = tmp_path.glob(f"{stem}-*-{figure}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    if name == "run.py":
        assert f"run {result.run_id}: 7 stages" in done.stdout


class Widgets:
    """``dbutils.widgets`` as a Databricks notebook sees it: declared widgets, values set."""

    def __init__(self, values: dict[str, str]):
        self.values, self.declared = values, {}

    def text(self, name, default, label=None):
        self.declared[name] = (default, label)

    def get(self, name):
        return self.values.get(name, self.declared[name][0])


def test_notebook_on_databricks_uses_widgets_and_display(lake, spark, monkeypatch):
    lakehouse, result = lake
    widgets = Widgets({"lakehouse": lakehouse, "run": result.run_id})
    shown = []
    monkeypatch.setattr(builtins, "dbutils", type("DBUtils", (), {"widgets": widgets})(),
                        raising=False)
    monkeypatch.setattr(builtins, "display", shown.append, raising=False)
    monkeypatch.delenv("CODEMILL_LAKEHOUSE", raising=False)
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    runpy.run_path(str(NOTEBOOKS / "run.py"), run_name="__main__")
    assert set(widgets.declared) == {"lakehouse", "run"}
    kinds = [type(x).__name__ for x in shown]
    assert "DataFrame" in kinds and "Figure" in kinds  # tables and plots went to display()
    ledger = next(x for x in shown if type(x).__name__ == "DataFrame")
    assert {r["stage"] for r in ledger.collect()} == set(STAGES)

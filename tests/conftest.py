"""Shared fixtures: one local SparkSession for the suite, a fresh lakehouse folder per test."""

from __future__ import annotations

import pytest

from jobs.config import load_config


@pytest.fixture(scope="session")
def spark():
    from jobs.session import spark_session

    cfg = load_config(env="local", overrides=[
        "spark.master=local[2]",
        "spark.shuffle_partitions=4",
        "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false', "
        "spark.databricks.delta.snapshotPartitions: '2', spark.driver.memory: '2g'}",
    ])
    session = spark_session(cfg.spark)
    yield session
    session.stop()


# (not spark-warehouse/: every local Spark session makes that empty folder in its working
# directory, as a user's would; it is ignored by git)
GENERATED = ("mlruns", "mlartifacts", "runs", "tokenizers", "lakehouse", "merged", "exports",
             ".deepspeed_env")


@pytest.fixture(scope="session", autouse=True)
def nothing_generated_in_the_checkout():
    """Tests write MLflow stores, runs, tokenizers and tables under tmp paths, never into the
    checkout: a test that creates one of these there fails the suite."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    before = {name for name in GENERATED if (repo / name).exists()}
    yield
    created = sorted(name for name in GENERATED if (repo / name).exists())
    created = [name for name in created if name not in before]
    assert not created, f"tests wrote {created} into the checkout {repo}"


@pytest.fixture(scope="session")
def reference_run(spark, tmp_path_factory):
    """(the ``--set`` of the sources, each table's content checksum) of the whole pipeline run
    in-process on local[2] over ``tests.test_idempotency.corpus``: what a run on another kind of
    cluster (standalone, Spark Connect) must write too, computed once for the suite."""
    from jobs.runner import run_pipeline
    from tests.test_idempotency import STAGES, content, corpus

    root = tmp_path_factory.mktemp("reference")
    sources = corpus(root / "corpus")
    run_pipeline(make_config(str(root / "lake"), sources), STAGES, spark=spark)
    return sources, content(str(root / "lake"))


@pytest.fixture(scope="session")
def tracked_run(spark, tmp_path_factory):
    """(lakehouse, RunResult) of the whole pipeline over ``tests.test_idempotency.corpus`` with
    report.html and the MLflow run on, logged to the lakehouse's own store (no
    MLFLOW_TRACKING_URI): read by tests/jobs/test_tracking.py and tests/test_browser.py."""
    import os

    from jobs.runner import run_pipeline
    from tests.test_idempotency import STAGES, corpus

    root = tmp_path_factory.mktemp("tracked")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        lake = str(root / "lake")
        result = run_pipeline(make_config(lake, corpus(root / "corpus"), "report=true",
                                          "mlflow.enabled=true"), STAGES, spark=spark)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return lake, result


@pytest.fixture
def lakehouse(tmp_path):
    return str(tmp_path / "lakehouse")


def make_config(lakehouse: str, *overrides: str):
    """Local config pointed at a test's lakehouse, with extra ``--set`` overrides. Without the
    run's report.html and MLflow run (a fresh MLflow store costs seconds per run):
    tests/jobs/test_tracking.py and tests/test_notebooks.py turn them on, and every ``codemill``
    run in a subprocess keeps the defaults."""
    return load_config(env="local", overrides=[f"lakehouse={lakehouse}", "report=false",
                                               "mlflow.enabled=false", *overrides])

"""Shared fixtures: one local SparkSession for the suite, a fresh lakehouse folder per test."""

from __future__ import annotations

import pytest

from jobs.config import load_config


@pytest.fixture(scope="session")
def spark():
    from jobs.lakehouse import spark_session

    cfg = load_config(env="local", overrides=[
        "spark.master=local[2]",
        "spark.shuffle_partitions=4",
        "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false', "
        "spark.databricks.delta.snapshotPartitions: '2', spark.driver.memory: '2g'}",
    ])
    session = spark_session(cfg.spark)
    yield session
    session.stop()


@pytest.fixture
def lakehouse(tmp_path):
    return str(tmp_path / "lakehouse")


def make_config(lakehouse: str, *overrides: str):
    """Local config pointed at a test's lakehouse, with extra ``--set`` overrides."""
    return load_config(env="local", overrides=[f"lakehouse={lakehouse}", *overrides])

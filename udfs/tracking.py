"""Where MLflow keeps codemill's runs: one store per lakehouse, shared by the pipeline's runs
(``jobs.tracking``) and training's (``training.train``), so the MLflow UI shows a model beside the
run that made its data. Used by both halves, hence here (``training/`` imports only ``udfs/``).

The store: ``MLFLOW_TRACKING_URI`` when set (a server, Databricks), else the config's
``tracking_uri``, else ``sqlite:///<lakehouse>/_mlflow/mlflow.db`` with artifacts under
``<lakehouse>/_mlflow/artifacts/<experiment>`` for a lakehouse on a local or mounted filesystem;
for a remote lakehouse (``s3://``, ``dbfs:``) MLflow's own default (the workspace on Databricks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PIPELINE_EXPERIMENT = "codemill-pipeline"
# tags a pipeline run carries: the lakehouse it wrote and each table's Delta version
LAKEHOUSE_TAG = "codemill.lakehouse"
RUN_ID_TAG = "codemill.run_id"
PIPELINE_RUN_TAG = "codemill.pipeline_run"  # on a training run: the pipeline run of its data


def table_tag(table: str) -> str:
    """The tag naming the Delta version of ``table`` a pipeline run wrote: ``delta.gold.sft``."""
    return f"delta.{table}"


def _local(lakehouse: str) -> bool:
    return "://" not in lakehouse and not lakehouse.startswith("dbfs:")


def tracking_uri(lakehouse: str, configured: str | None = None) -> str | None:
    """The tracking URI for runs on ``lakehouse`` (None: leave MLflow's default)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    if _local(lakehouse):
        store = Path(lakehouse).resolve() / "_mlflow"
        store.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{store / 'mlflow.db'}"
    return None


def lakehouse_id(lakehouse: str) -> str:
    """The lakehouse as tagged: an absolute path, or the URI as given."""
    return str(Path(lakehouse).resolve()) if _local(lakehouse) else lakehouse


def experiment_id(client, name: str, lakehouse: str) -> str:
    """The experiment's id, created when missing. With a database or file store (not a server,
    which keeps artifacts itself) and a local lakehouse, its artifacts go under
    ``<lakehouse>/_mlflow/artifacts/<name>``, not MLflow's ``./mlruns`` in whatever the working
    directory is."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if _local(lakehouse) and not client.tracking_uri.startswith(("http:", "https:",
                                                                  "databricks")):
        location = (Path(lakehouse).resolve() / "_mlflow" / "artifacts" / name).as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def pipeline_run_for(client, lakehouse: str, table: str, version: int):
    """The latest pipeline run that wrote ``table`` at ``version`` in ``lakehouse`` (an MLflow
    ``Run``), or None."""
    found = client.get_experiment_by_name(PIPELINE_EXPERIMENT)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(f"tags.`{table_tag(table)}` = '{version}' and "
                       f"tags.`{LAKEHOUSE_TAG}` = '{lakehouse_id(lakehouse)}'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings → ``a.b.c`` params, values as strings cut to MLflow's 6,000-char limit."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v))[:6000]
    return out

"""Every ``codemill run`` as an MLflow run, in the store training logs to (``udfs.tracking``).

One run per pipeline run, in experiment ``mlflow.experiment`` (``codemill-pipeline``), named by
the codemill run id:

* params: the resolved config, flattened (``ingest.sources``, ``dedup.threshold``, …);
* metrics: each stage's ``<stage>.rows_in`` / ``rows_out`` / ``rows_dropped`` /
  ``rows_quarantined`` / ``output_rows`` / ``seconds``, ``<stage>.dropped.<reason>``, and
  build_sft's ``build_sft.source.<source>.rows_in`` / ``rows_out``;
* tags: ``codemill.run_id``, ``codemill.config_hash``, ``codemill.lakehouse`` and, for every table
  the run wrote, ``delta.<table>`` = its Delta version (how a training run finds the pipeline
  run that wrote its gold.sft version: ``udfs.tracking.pipeline_run_for``);
* dataset inputs: the tables the stages read (context ``input``) and wrote (context ``output``:
  MLflow has no dataset outputs), each a Delta source with its path and version;
* artifacts: the run folder's summary.json, config.yaml and report.html.

MLflow is told after the tables are written: a store that cannot be reached is a warning, never
a lost run.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from udfs.tracking import (
    LAKEHOUSE_TAG,
    RUN_ID_TAG,
    experiment_id,
    flatten,
    lakehouse_id,
    table_tag,
    tracking_uri,
)

if TYPE_CHECKING:
    from jobs.config import PipelineConfig
    from jobs.runner import RunResult


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def metrics_of(result: RunResult) -> dict[str, float]:
    """The run's metrics by name (see the module docstring)."""
    out: dict[str, float] = {}
    for r in result.reports:
        s = r.stage
        for key in ("rows_in", "rows_out", "rows_dropped", "rows_quarantined", "seconds"):
            out[f"{s}.{key}"] = float(getattr(r, key))
        if r.output_rows is not None:
            out[f"{s}.output_rows"] = float(r.output_rows)
        for reason, n in r.dropped.items():
            out[f"{s}.dropped.{reason}"] = float(n)
        for source, n in (r.source_rows_in or {}).items():
            out[f"{s}.source.{source}.rows_in"] = float(n)
            out[f"{s}.source.{source}.rows_out"] = float((r.source_rows_out or {}).get(source, 0))
    return out


def _datasets(lakehouse: str, result: RunResult):
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    read = {(t, v) for r in result.reports for t, v in r.input_versions.items()}
    wrote = {(t, v) for t, (_, v) in result.tables.items() if v is not None}
    out = []
    for context, pairs in (("input", read), ("output", wrote)):
        for table, version in sorted(pairs):
            path = str(Path(lakehouse_id(lakehouse), *table.split(".")))
            dataset = MetaDataset(DeltaDatasetSource(path=path, delta_table_version=version),
                                  name=f"{table}@{version}")
            out.append(DatasetInput(dataset._to_mlflow_entity(),
                                    [InputTag("mlflow.data.context", context)]))
    return out


def _started_ms(result: RunResult, now: int) -> int:
    """When the run began: its id's UTC time (``jobs.runner.new_run_id``: a resumed run keeps
    its first start), else now less its stages' seconds."""
    from datetime import datetime, timezone

    try:
        started = datetime.strptime(result.run_id[:16], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return now - int(1000 * sum(r.seconds for r in result.reports))
    return int(started.replace(tzinfo=timezone.utc).timestamp() * 1000)


def log_pipeline_run(cfg: PipelineConfig, result: RunResult) -> str | None:
    """Log ``result`` as a finished MLflow run; its MLflow run id (None when off or failed)."""
    if not cfg.mlflow.enabled or result.run_dir is None:
        return None
    try:
        return _log(cfg, result)
    except Exception as exc:  # noqa: BLE001 - the tables are written; say why MLflow is not
        warnings.warn(f"MLflow: run {result.run_id} not logged: {type(exc).__name__}: {exc}",
                      stacklevel=1)
        return None


def _log(cfg: PipelineConfig, result: RunResult) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri(cfg.lakehouse, cfg.mlflow.tracking_uri))
    experiment = experiment_id(client, cfg.mlflow.experiment, cfg.lakehouse)
    tags = {RUN_ID_TAG: result.run_id, "codemill.config_hash": cfg.config_hash(),
            LAKEHOUSE_TAG: lakehouse_id(cfg.lakehouse), "codemill.kind": "pipeline",
            "codemill.stages": ",".join(r.stage for r in result.reports)}
    tags.update({table_tag(t): str(v) for t, (_, v) in result.tables.items() if v is not None})
    now = int(time.time() * 1000)
    # the run's span, not the seconds MLflow's own calls take: from the run id's start time
    run = client.create_run(experiment, run_name=result.run_id, tags=tags,
                            start_time=_started_ms(result, now))
    run_id = run.info.run_id
    metrics = [Metric(k, v, now, 0) for k, v in sorted(metrics_of(result).items())]
    params = [Param(k, v) for k, v in sorted(flatten(cfg.model_dump(mode="json")).items())]
    for chunk in _chunks(metrics, 1000):  # MLflow's per-request limits
        client.log_batch(run_id, metrics=chunk)
    for chunk in _chunks(params, 100):
        client.log_batch(run_id, params=chunk)
    client.log_batch(run_id, tags=[RunTag("mlflow.note.content",
                                          f"codemill run `{result.run_id}`; tables at "
                                          f"`{lakehouse_id(cfg.lakehouse)}`.")])
    client.log_inputs(run_id, datasets=_datasets(cfg.lakehouse, result))
    folder = Path(result.run_dir)
    for name in ("summary.json", "config.yaml", "report.html"):
        if (folder / name).exists():
            client.log_artifact(run_id, str(folder / name))
    client.set_terminated(run_id, "FINISHED", end_time=now)
    return run_id

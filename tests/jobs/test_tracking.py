"""A pipeline run as an MLflow run and as report.html: what each holds, read back from the real
store and the real page."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from deltalake import DeltaTable

from jobs.run_report import PLOTS, write_report
from jobs.runner import run_pipeline
from tests.conftest import make_config
from tests.test_idempotency import STAGES, corpus
from udfs.tracking import pipeline_run_for

ON = ("report=true", "mlflow.enabled=true")  # make_config turns both off


def test_a_run_is_an_mlflow_run_and_a_report(tracked_run):
    from mlflow import MlflowClient

    lakehouse, result = tracked_run
    store = Path(lakehouse).resolve() / "_mlflow" / "mlflow.db"
    assert store.exists(), "the lakehouse's own store"
    client = MlflowClient(f"sqlite:///{store}")
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_id
    assert client.get_experiment(run.info.experiment_id).name == "codemill-pipeline"
    # its span is the run's: from the run id's start second to after its last stage
    started = datetime.strptime(result.run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert run.info.start_time == int(started.timestamp()) * 1000
    assert run.info.end_time - run.info.start_time >= 1000 * sum(r.seconds for r in result.reports)

    # params: the resolved config; metrics: the ledger, stage by stage
    params = run.data.params
    assert params["dedup.threshold"] == "0.7" and json.loads(params["stages"]) == STAGES
    assert json.loads(params["ingest.sources"])[0]["kind"] == "tree"
    ledger = {r["stage"]: r for r in DeltaTable(f"{lakehouse}/ops/ledger").to_pyarrow_table()
              .to_pylist()}
    metrics = run.data.metrics
    for stage, row in ledger.items():
        for key in ("rows_in", "rows_out", "rows_dropped", "rows_quarantined", "seconds"):
            assert metrics[f"{stage}.{key}"] == row[key], (stage, key)
        for reason, n in dict(row["dropped"]).items():
            assert metrics[f"{stage}.dropped.{reason}"] == n
    assert metrics["build_sft.source.code.rows_in"] == ledger["build_sft"]["output_rows"]

    # tags: every table's version; datasets: the tables read and written, with their versions
    tags = run.data.tags
    for table, (_, version) in result.tables.items():
        assert tags[f"delta.{table}"] == str(version)
    assert tags["codemill.lakehouse"] == str(Path(lakehouse).resolve())
    contexts = {(d.dataset.name, t.value) for d in run.inputs.dataset_inputs for t in d.tags
                if t.key == "mlflow.data.context"}
    sft_version = result.tables["gold.sft"][1]
    assert (f"gold.sft@{sft_version}", "output") in contexts
    assert (f"silver.unique_files@{ledger['split']['input_versions'][0][1]}", "input") in contexts
    source = next(json.loads(d.dataset.source) for d in run.inputs.dataset_inputs
                  if d.dataset.name == f"gold.sft@{sft_version}")
    # (MLflow's DeltaDatasetSource writes no version when it is 0)
    assert source.get("delta_table_version", 0) == sft_version
    assert source["path"] == str(Path(lakehouse).resolve() / "gold" / "sft")

    # artifacts: the run folder's files; a training run finds this run from its table version
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"summary.json", "config.yaml", "report.html"}
    found = pipeline_run_for(client, lakehouse, "gold.sft", sft_version)
    assert found.info.run_id == run.info.run_id
    assert pipeline_run_for(client, lakehouse, "gold.sft", sft_version + 1) is None

    # report.html: self-contained, one drawn plot per section, the ledger's numbers
    page = (Path(result.run_dir) / "report.html").read_text()
    assert not re.search(r"<script|<link|src=\"http", page)
    for key, _ in PLOTS:
        figure = re.search(rf"<figure id='plot-{key}' class='(\w+)'>(.*?)</figure>", page, re.S)
        assert figure and figure[1] == "plot", key
        assert figure[2].count("<path") >= 3, key  # axes and at least one bar
    for stage, row in ledger.items():
        assert f"<td>{stage}</td><td>{row['rows_in']:,}</td><td>{row['rows_out']:,}</td>" in page
    # rebuilt on demand: the same page
    assert write_report(lakehouse, result.run_id).read_text() == page


def test_a_stage_alone_reports_what_it_did_not_write(spark, lakehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    sources = corpus(tmp_path / "corpus")
    result = run_pipeline(make_config(lakehouse, sources, *ON), ["ingest"], spark=spark)
    page = (Path(result.run_dir) / "report.html").read_text()
    assert "<figure id='plot-funnel' class='plot'>" in page
    assert ("<figure id='plot-file_sizes' class='absent'><figcaption>File sizes (silver.files)"
            "</figcaption>\n<p class='note'>silver.files: not written by this run</p>") in page
    # MLFLOW_TRACKING_URI wins over the lakehouse's store
    assert (tmp_path / "elsewhere.db").exists()
    assert not (Path(lakehouse) / "_mlflow" / "mlflow.db").exists()
    # its artifacts are kept beside the lakehouse, not in ./mlruns of the working directory
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path / 'elsewhere.db'}").get_run(result.mlflow_run_id)
    assert run.info.artifact_uri.startswith((Path(lakehouse).resolve() / "_mlflow").as_uri())


def test_record_lengths_for_the_plot():
    import pyarrow as pa

    from jobs.run_report import _record_lengths

    messages = [[{"role": "user", "content": "abc"}, {"role": "assistant", "content": "de"}],
                [{"role": "user", "content": None}, {"role": "assistant", "content": "xyz!"}]]
    none = pa.array([None, None], pa.int64())
    old = pa.table({"token_count": none, "messages": messages})  # no chars column
    lengths, unit = _record_lengths(old)
    assert (lengths.tolist(), unit) == ([5.0, 4.0], "characters")
    new = pa.table({"token_count": none, "chars": pa.array([7, 9], pa.int64())})
    lengths, unit = _record_lengths(new)
    assert (lengths.tolist(), unit) == ([7.0, 9.0], "characters")
    counted = pa.table({"token_count": pa.array([11, None], pa.int64()), "chars": [1, 2]})
    lengths, unit = _record_lengths(counted)
    assert (lengths.tolist(), unit) == ([11.0], "tokens")

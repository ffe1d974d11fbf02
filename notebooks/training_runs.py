# Databricks notebook source
# MAGIC %md
# MAGIC # Training runs compared, from MLflow
# MAGIC Loss curves, the params that differ between runs, and evaluation metrics of the training
# MAGIC runs in an experiment, each with the pipeline run that made its data. Widgets: `lakehouse`
# MAGIC (its MLflow store, unless `MLFLOW_TRACKING_URI` is set), `experiment`, `runs` (how many).

# COMMAND ----------

import nb
from mlflow import MlflowClient

from udfs.tracking import PIPELINE_RUN_TAG, tracking_uri

LAKEHOUSE = nb.widget("lakehouse", "lakehouse", "Lakehouse root")
EXPERIMENT = nb.widget("experiment", "codemill-lora", "MLflow experiment")
LIMIT = int(nb.widget("runs", "10", "Runs to compare"))
client = MlflowClient(tracking_uri(LAKEHOUSE))
found = client.get_experiment_by_name(EXPERIMENT)
runs = [] if found is None else client.search_runs(
    [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=LIMIT)
print(f"{len(runs)} runs in {EXPERIMENT} ({client.tracking_uri})")

# COMMAND ----------

# MAGIC %md ## Loss curves

# COMMAND ----------

fig, ax = nb.figure()
for run in runs:
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                          "loss"))
    if history:
        ax.plot([s for s, _ in history], [v for _, v in history], label=run.info.run_name)
ax.set_xlabel("step")
ax.set_ylabel("loss")
if runs:
    ax.legend(frameon=False)
nb.show(fig, "loss")

# COMMAND ----------

# MAGIC %md ## Params that differ between the runs

# COMMAND ----------

import pandas as pd  # noqa: E402

params = pd.DataFrame({r.info.run_name: r.data.params for r in runs})
differ = params[params.nunique(axis=1, dropna=False) > 1] if len(runs) > 1 else params
nb.show(differ.sort_index())

# COMMAND ----------

# MAGIC %md ## Evaluation metrics and the data each run was trained on

# COMMAND ----------

rows = []
for r in runs:
    final = {k: v for k, v in r.data.metrics.items() if k.startswith(("eval", "humaneval",
                                                                      "perplexity", "loss"))}
    rows.append({"run": r.info.run_name, "status": r.info.status,
                 "data": f"{r.data.tags.get('data.table', '?')}@"
                         f"{r.data.tags.get('data.version', '?')}",
                 "pipeline_run": r.data.tags.get(PIPELINE_RUN_TAG, ""), **final})
nb.show(pd.DataFrame(rows))

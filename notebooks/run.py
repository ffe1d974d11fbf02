# Databricks notebook source
# MAGIC %md
# MAGIC # A codemill run: the ledger, the funnel, the rejects
# MAGIC What each stage of one run read, kept, dropped (by reason) and quarantined, and examples of
# MAGIC the files it rejected. Widgets: `lakehouse` (the tables' root) and `run` (a run id; empty:
# MAGIC the latest). Locally: `CODEMILL_LAKEHOUSE=lakehouse python notebooks/run.py`.

# COMMAND ----------

import nb
from pyspark.sql import Window
from pyspark.sql import functions as F

from jobs.lakehouse import Lakehouse

LAKEHOUSE = nb.widget("lakehouse", "lakehouse", "Lakehouse root")
RUN = nb.widget("run", "", "Run id (empty: the latest)")
spark = nb.spark_session(LAKEHOUSE)
lake = Lakehouse(spark, LAKEHOUSE)
ledger = lake.read("ops.ledger")[0].where(~F.col("dry_run"))
run_id = RUN or ledger.agg(F.max("run_id")).first()[0]
rows = ledger.where(F.col("run_id") == run_id).cache()
print(f"run {run_id}: {rows.count()} stages")

# COMMAND ----------

# MAGIC %md ## The ledger: one row per stage

# COMMAND ----------

nb.show(rows.select("stage", "rows_in", "rows_out", "rows_dropped", "rows_quarantined",
                    "output_rows", "seconds").orderBy("seconds"))

# COMMAND ----------

# MAGIC %md ## The funnel: rows kept by each stage, and every drop by stage and reason

# COMMAND ----------

stages = rows.select("stage", "rows_in", "rows_out").toPandas()
fig, ax = nb.figure()
ax.bar(stages["stage"], stages["rows_in"], color="#9aa5b1", label="in")
ax.bar(stages["stage"], stages["rows_out"], color="#4c72b0", label="kept")
ax.set_ylabel("rows")
ax.legend(frameon=False)
nb.show(fig, "funnel")

drops = (rows.select("stage", F.explode("dropped").alias("reason", "rows"))
         .orderBy(F.desc("rows")))
nb.show(drops)
top = drops.limit(25).toPandas()
if len(top):
    fig, ax = nb.figure(8, 0.3 * len(top) + 1)
    ax.barh((top["stage"] + ": " + top["reason"])[::-1], top["rows"][::-1], color="#4c72b0")
    ax.set_xscale("log")
    ax.set_xlabel("rows dropped")
    nb.show(fig, "drops")

# COMMAND ----------

# MAGIC %md ## Rejected files by reason, three examples of each

# COMMAND ----------

rejects = lake.read("silver.rejects")[0]
first = Window.partitionBy("stage", "reason").orderBy("repo", "path")
nb.show(rejects.withColumn("n", F.row_number().over(first)).where("n <= 3")
        .select("stage", "reason", "repo", "path", "detail").orderBy("stage", "reason", "n"),
        rows=90)

# COMMAND ----------

# MAGIC %md ## Quarantined records: what could not be read, and where it came from

# COMMAND ----------

nb.show(lake.read("ops.quarantine")[0].select("stage", "source_kind", "source", "error"))

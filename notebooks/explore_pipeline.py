# Databricks notebook source
# MAGIC %md
# MAGIC # Explore a codemill run
# MAGIC Reads the ledger and the tables of the latest run: what each stage kept, dropped and why.
# MAGIC On Databricks, set `LAKEHOUSE` to the workspace path; locally it runs as a plain script:
# MAGIC `python notebooks/explore_pipeline.py` after `make run`.

# COMMAND ----------

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()) if Path("jobs").exists() else str(Path.cwd().parent))

from jobs.config import load_config  # noqa: E402
from jobs.lakehouse import Lakehouse  # noqa: E402
from jobs.session import spark_session  # noqa: E402

LAKEHOUSE = os.environ.get("CODEMILL_LAKEHOUSE", "lakehouse")
cfg = load_config(env="local", overrides=[f"lakehouse={LAKEHOUSE}"])
spark = spark_session(cfg.spark)  # on Databricks this returns the notebook's session
lake = Lakehouse(spark, cfg.lakehouse)

# COMMAND ----------

# MAGIC %md ## The ledger: one row per stage per run

# COMMAND ----------

ledger, _ = lake.read("ops.ledger")
ledger.orderBy("run_id", "stage").select(
    "run_id", "stage", "rows_in", "rows_out", "rows_dropped", "rows_quarantined", "seconds"
).show(truncate=False)

# COMMAND ----------

# MAGIC %md ## Why rows were dropped, and a sample of each reason

# COMMAND ----------

rejects, _ = lake.read("silver.rejects")
rejects.groupBy("stage", "reason").count().orderBy("count", ascending=False).show(truncate=False)
rejects.select("reason", "repo", "path").dropDuplicates(["reason"]).show(truncate=False)

# COMMAND ----------

# MAGIC %md ## What was kept, by language and license

# COMMAND ----------

silver, version = lake.read("silver.files")
print(f"silver.files @ version {version}")
silver.groupBy("language", "license").count().orderBy("count", ascending=False).show()

# COMMAND ----------

quarantine, _ = lake.read("ops.quarantine")
quarantine.select("stage", "source_kind", "error").show(truncate=80)

# COMMAND ----------

# MAGIC %md ## Duplicate clusters: the largest ones, and why a file was removed

# COMMAND ----------

if lake.exists("silver.dup_clusters"):
    from pyspark.sql import functions as F

    clusters, _ = lake.read("silver.dup_clusters")
    clusters.groupBy("kind").agg(F.count("*").alias("clusters"), F.sum("size").alias("files"),
                                 F.min("min_jaccard").alias("lowest_jaccard")).show()
    clusters.orderBy(F.col("size").desc()).select(
        "kind", "size", "min_jaccard", "representative").show(10, truncate=20)
    (rejects.where("stage = 'dedup'").select("path", "reason", "detail")
     .orderBy("path").show(10, truncate=100))

# COMMAND ----------

# MAGIC %md ## Samples cut along the syntax tree: how many of each kind, and one of each

# COMMAND ----------

if lake.exists("gold.samples"):
    from pyspark.sql import functions as F

    samples, version = lake.read("gold.samples")
    print(f"gold.samples @ version {version}")
    samples.groupBy("language", "task_type").count().orderBy("language", "task_type").show(50)
    samples.groupBy("split_method", "parse_status").count().show()
    for row in (samples.where("task_type != 'fim_repo'").dropDuplicates(["task_type"])
                .select("task_type", "path", "symbol", "context", "target", "rendered")
                .collect()):
        print(f"--- {row.task_type}: {row.path} {row.symbol or ''}")
        if row.rendered:
            print(row.rendered[-600:])
        else:
            print((row.context or "")[-400:], "⟨target⟩", (row.target or "")[:400], sep="")
    skips, _ = lake.read("gold.sample_skips")
    skips.groupBy("task_type", "reason").count().orderBy(F.col("count").desc()).show()

# COMMAND ----------

# MAGIC %md ## The SFT table: tasks, quality and weights, splits, one conversation

# COMMAND ----------

if lake.exists("gold.sft"):
    from pyspark.sql import functions as F

    sft, version = lake.read("gold.sft")
    print(f"gold.sft @ version {version}")
    sft.groupBy("task_type").agg(F.count("*").alias("records"),
                                 F.round(F.avg("quality"), 3).alias("avg_quality"),
                                 F.round(F.avg("weight"), 3).alias("avg_weight")).show(20)
    sft.groupBy("split").agg(F.countDistinct("repo").alias("repos"),
                             F.count("*").alias("records")).show()
    example = sft.where("task_type = 'refactor'").first() or sft.first()
    for message in example.messages:
        print(f"[{message.role}]\n{message.content[:600]}\n")
    if lake.exists("gold.sft_token_stats"):
        lake.read("gold.sft_token_stats")[0].orderBy("split", "language").show()

# Databricks notebook source
# MAGIC %md
# MAGIC # Samples and SFT records: by task, language and source; quality and weights
# MAGIC `gold.samples` (cut along the syntax tree) and `gold.sft` (ChatML records from code,
# MAGIC commits and chats). Widgets: `lakehouse`.

# COMMAND ----------

import nb
from pyspark.sql import functions as F

from jobs.lakehouse import Lakehouse

LAKEHOUSE = nb.widget("lakehouse", "lakehouse", "Lakehouse root")
spark = nb.spark_session(LAKEHOUSE)
lake = Lakehouse(spark, LAKEHOUSE)
samples, samples_version = lake.read("gold.samples")
sft, sft_version = lake.read("gold.sft")
sft = sft.cache()
print(f"gold.samples@{samples_version}, gold.sft@{sft_version}: {sft.count():,} records")

# COMMAND ----------

# MAGIC %md ## Samples by task type and language

# COMMAND ----------

nb.show(samples.groupBy("task_type").pivot("language").count().orderBy("task_type"))
nb.show(samples.groupBy("split_method", "parse_status").count())

# COMMAND ----------

# MAGIC %md ## SFT records by task, language and source

# COMMAND ----------

nb.show(sft.groupBy("source", "task_type").agg(
    F.count("*").alias("records"), F.round(F.avg("quality"), 3).alias("quality"),
    F.round(F.avg("weight"), 3).alias("weight")).orderBy("source", "task_type"), rows=50)
nb.show(sft.groupBy("language").pivot("source").count().orderBy("language"))
nb.show(sft.groupBy("split").agg(F.countDistinct("repo").alias("repos"),
                                 F.count("*").alias("records")))

# COMMAND ----------

# MAGIC %md ## Quality and weight distributions, per source

# COMMAND ----------

scores = sft.select("source", "quality", "weight").toPandas()
for column, log in (("quality", False), ("weight", True)):
    fig, ax = nb.figure()
    for source, part in scores.groupby("source"):
        ax.hist(part[column], bins=30, alpha=0.6, label=source)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(column)
    ax.set_ylabel("records")
    ax.legend(frameon=False)
    nb.show(fig, column)

# COMMAND ----------

# MAGIC %md ## One conversation of each source

# COMMAND ----------

for row in sft.orderBy("sft_id").dropDuplicates(["source"]).collect():
    print(f"=== {row.source} · {row.task_type} · {row.repo or row.path}")
    for message in row.messages:
        print(f"[{message.role}]\n{(message.content or '')[:500]}\n")

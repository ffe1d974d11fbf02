# Databricks notebook source
# MAGIC %md
# MAGIC # Duplicates: the largest clusters, their members side by side
# MAGIC Exact and near-duplicate clusters from `silver.dup_clusters`; for the largest near cluster,
# MAGIC each member's Jaccard similarity to the representative, computed here on the same
# MAGIC shingles dedup uses (`udfs.minhash`), and the two most different texts side by side.
# MAGIC Widgets: `lakehouse`, `clusters` (how many to list).

# COMMAND ----------

import nb
from pyspark.sql import functions as F

from jobs.lakehouse import Lakehouse
from udfs.minhash import shingles, tokenize

LAKEHOUSE = nb.widget("lakehouse", "lakehouse", "Lakehouse root")
TOP = int(nb.widget("clusters", "10", "Clusters to list"))
spark = nb.spark_session(LAKEHOUSE)
lake = Lakehouse(spark, LAKEHOUSE)
clusters = lake.read("silver.dup_clusters")[0].cache()

# COMMAND ----------

# MAGIC %md ## Clusters by kind, and the largest ones

# COMMAND ----------

nb.show(clusters.groupBy("kind").agg(F.count("*").alias("clusters"),
                                     F.sum("size").alias("files"),
                                     F.min("min_jaccard").alias("lowest_jaccard")))
nb.show(clusters.orderBy(F.desc("size"), "cluster_id")
        .select("kind", "size", "max_jaccard", "min_jaccard", "representative").limit(TOP))
sizes = clusters.select("size").toPandas()
if len(sizes):
    fig, ax = nb.figure()
    ax.hist(sizes["size"], bins=30, color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("files per cluster")
    nb.show(fig, "cluster_sizes")

# COMMAND ----------

# MAGIC %md ## The largest near-duplicate cluster, member by member

# COMMAND ----------

biggest = (clusters.where("kind = 'near'").orderBy(F.desc("size"), "cluster_id").first()
           or clusters.orderBy(F.desc("size"), "cluster_id").first())
if biggest is None:
    print("no duplicate clusters in this lakehouse")
else:
    files = lake.read("silver.files")[0]
    members = (files.where(F.col("id").isin(list(biggest.members)))
               .select("id", "repo", "path", "text").toPandas())
    texts = dict(zip(members["id"], members["text"]))
    rep = set(shingles(tokenize(texts[biggest.representative]), 5))

    def jaccard(text):
        other = set(shingles(tokenize(text), 5))
        return len(rep & other) / max(len(rep | other), 1)

    members["jaccard"] = [jaccard(t) for t in members["text"]]
    members["representative"] = members["id"] == biggest.representative
    members = members.sort_values(["representative", "jaccard"], ascending=[False, False])
    nb.show(members[["repo", "path", "jaccard", "representative"]])
    far = members.iloc[-1]
    left = texts[biggest.representative].splitlines()[:30]
    right = far["text"].splitlines()[:30]
    print(f"{'representative':<60} | {far['repo']}/{far['path']} (Jaccard {far['jaccard']:.2f})")
    for a, b in zip(left + [""] * (30 - len(left)), right + [""] * (30 - len(right))):
        print(f"{a[:60]:<60} | {b[:60]}")

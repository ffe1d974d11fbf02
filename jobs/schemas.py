"""The tables: their names and purposes, their partitioning, which columns Delta keeps file
statistics for, and the schemas every stage shares (file rows, silver.rejects, ops.quarantine).
Spark-free, so the catalog, the stages and the tests read the same declarations."""

from __future__ import annotations

TABLES: dict[str, str] = {
    "bronze.files": "every ingested file, one row per file, schema-checked",
    "silver.files": "files that passed every quality rule",
    "silver.unique_files": "silver.files without exact and near duplicates (one per cluster)",
    "silver.dup_clusters": "every exact or near-duplicate cluster: members, representative, Jaccard",
    "gold.samples": "training samples cut along the syntax tree: completion, docstring, FIM",
    "gold.sample_skips": "every candidate sample the split stage skipped, with the reason",
    "gold.sft": "SFT records: ChatML messages, quality, weight, train/eval split, token counts",
    "gold.sft_skips": "augmentations not emitted (unparseable), with the reason",
    "gold.sft_token_stats": "token count p50/p90/p99/max and rows over max length",
    "silver.rejects": "every row a stage dropped, with the stage and the reason",
    "ops.quarantine": "records a stage could not read or parse, with the payload and the error",
    "ops.ledger": "one row per stage per run: rows in/out/dropped/quarantined, versions, seconds",
}


# Tables that every stage writes a slice of (``stage = '<name>'``), partitioned by that column, so
# replacing one stage's slice is a metadata-only delete. Unpartitioned, Delta's replaceWhere scanned
# every earlier slice's files (their text included) to find the rows to delete, in one task.
PARTITIONS: dict[str, tuple[str, ...]] = {"silver.rejects": ("stage",), "ops.quarantine": ("stage",)}

# Long text columns Delta keeps no per-file statistics for. Their min/max (cut to 32 characters)
# never skip a file, and computing them is about a tenth of writing the text (bench/RESULTS.md,
# bench/delta_write.py). A table with one
# of them gets ``delta.dataSkippingStatsColumns`` = its other columns that Delta can keep
# statistics for; the rest keep Delta's default (the first 32 columns).
UNINDEXED_TEXT = frozenset({"text", "payload", "context", "target", "prefix", "middle", "suffix",
                            "rendered"})
STATS_COLUMNS = "delta.dataSkippingStatsColumns"


def stats_columns(schema, partitions: tuple[str, ...] = ()) -> str | None:
    """``delta.dataSkippingStatsColumns`` for a table of ``schema`` (a Spark StructType): its
    columns of the types Delta keeps min/max for (numbers, strings, dates, timestamps), without
    ``UNINDEXED_TEXT`` and ``partitions`` (Delta refuses both); None when it has no long text."""
    from pyspark.sql import types as T

    skippable = (T.NumericType, T.StringType, T.DateType, T.TimestampType, T.TimestampNTZType)
    names = [f.name for f in schema.fields]
    if not UNINDEXED_TEXT.intersection(names):
        return None
    keep = [f.name for f in schema.fields if f.name not in UNINDEXED_TEXT
            and f.name not in partitions and isinstance(f.dataType, skippable)]
    return ",".join(keep) or None

# The columns of a file row, as bronze.files, silver.files and silver.unique_files share them.
FILE_COLUMNS = ("id", "repo", "path", "language", "license", "stars", "text", "size_bytes")
# The quality signals the filter computes for every file it keeps (silver.files and
# silver.unique_files carry them; dedup's rank and build_sft's quality read them).
SIGNALS = "num_lines long, alpha_fraction double, avg_line_length double, max_line_length long"
SIGNAL_COLUMNS = tuple(s.split(" ")[0] for s in SIGNALS.split(", "))

REJECT_SCHEMA = (
    "stage string, reason string, id string, repo string, path string, language string, "
    "license string, stars long, text string, size_bytes long, detail string"
)
QUARANTINE_SCHEMA = "stage string, source_kind string, source string, payload string, error string"

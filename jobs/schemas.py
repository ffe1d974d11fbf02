"""The tables: their names and purposes, their schemas (``TABLE_SCHEMAS``, checked before every
write a stage makes: ``schema_mismatch``), their partitioning and which columns Delta keeps file
statistics for. Spark-free, so the catalog, the stages and the tests read the same declarations."""

from __future__ import annotations

TABLES: dict[str, str] = {
    "bronze.files": "every ingested file, one row per file, schema-checked",
    "silver.files": "files that passed every quality rule",
    "silver.unique_files": "silver.files without exact and near duplicates (one per cluster)",
    "silver.dup_clusters": "every exact or near-duplicate cluster: members, representative, Jaccard",
    "gold.samples": "training samples cut along the syntax tree: completion, docstring, FIM",
    "gold.sample_skips": "every candidate sample the split stage skipped, with the reason",
    "silver.commits": "one example per meaningful commit of the git sources (redacted)",
    "silver.chats": "conversations of the chat sources, normalized to ChatML (redacted)",
    "gold.sft": "SFT records of code, commits and chats: ChatML messages, source, quality, "
                "weight, train/eval split, token counts",
    "gold.sft_skips": "augmentations not emitted (unparseable), with the reason",
    "gold.sft_token_stats": "token count p50/p90/p99/max and rows over max length, per split, "
                            "language and source",
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
                            "rendered", "message"})
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
# gold.sft's messages: ChatML turns, tool calls with their arguments as a JSON string
MESSAGES = ("array<struct<role:string,content:string,tool_calls:array<struct<id:string,"
            "type:string,function:struct<name:string,arguments:string>>>>>")
# silver.commits' changed files: each one's unified diff and its regions before and after
COMMIT_FILES = ("array<struct<path:string,old_path:string,status:string,language:string,"
                "diff:string,hunks:array<struct<old_start:bigint,new_start:bigint,"
                "before:string,after:string>>>>")
_FILE = ("id string, repo string, path string, language string, license string, stars long, "
         "text string, size_bytes long")

# Every table's columns in order, as Spark DDL. A stage whose output differs fails before it
# writes (``jobs.runner``), naming the columns; tests compare the written tables with these.
TABLE_SCHEMAS: dict[str, str] = {
    "bronze.files": f"{_FILE}, source_kind string, source string",
    "silver.files": f"{_FILE}, {SIGNALS}, redactions map<string,int>",
    "silver.unique_files": f"{_FILE}, {SIGNALS}, content_hash string",
    "silver.dup_clusters": ("kind string, cluster_id string, representative string, "
                            "members array<string>, size long, max_jaccard double, "
                            "min_jaccard double"),
    "gold.samples": ("sample_id string, file_id string, repo string, path string, "
                     "language string, task_type string, split_method string, symbol string, "
                     "symbol_kind string, context string, target string, prefix string, "
                     "middle string, suffix string, fim_mode string, rendered string, "
                     "spans map<string,array<long>>, cut string, parse_status string"),
    "gold.sample_skips": ("file_id string, repo string, path string, language string, "
                          "task_type string, symbol string, reason string, span_start long, "
                          "span_end long"),
    "silver.commits": ("commit_id string, repo string, subject string, message string, "
                       f"language string, files {COMMIT_FILES}, lines_added long, "
                       "lines_removed long, size_bytes long, redactions map<string,int>"),
    "silver.chats": (f"chat_id string, source string, format string, messages {MESSAGES}, "
                     "turns long, language string, redactions map<string,int>"),
    "gold.sft": ("sft_id string, source string, sample_id string, file_id string, repo string, path string, "
                 "source_version long, task_type string, source_task string, language string, "
                 f"messages {MESSAGES}, quality double, weight double, split string, "
                 "chars long, token_count long, truncated boolean"),
    "gold.sft_skips": ("sample_id string, file_id string, repo string, path string, "
                       "language string, source_task string, task_type string, reason string"),
    "gold.sft_token_stats": ("split string, language string, source string, records long, p50 double, "
                             "p90 double, p99 double, max long, over_max_length long"),
    "silver.rejects": REJECT_SCHEMA,
    "ops.quarantine": QUARANTINE_SCHEMA,
    "ops.ledger": ("run_id string, stage string, rows_in long, rows_out long, rows_dropped long, "
                   "dropped map<string,long>, rows_quarantined long, bytes_in long, "
                   "bytes_out long, seconds double, config_hash string, "
                   "input_versions map<string,long>, output_versions map<string,long>, "
                   "dry_run boolean, output_rows long, source_rows_in map<string,long>, "
                   "source_rows_out map<string,long>"),
}
# Delta CHECK constraints: invariants a table states about every row, enforced by Delta on every
# write (a violating write fails, naming the constraint). Only on tables that dedup's delta-rs
# commits do not write (a constraint raises the table's writer version past what they accept).
# The file tables' invariants are the stages' own checks (the schema contract, the row balance).
CONSTRAINTS: dict[str, dict[str, str]] = {
    "gold.sft": {"weight_positive": "weight > 0",
                 "source_known": "source IN ('code', 'git', 'chat')",
                 "split_known": "split IN ('train', 'eval')",
                 "quality_is_a_share": "quality BETWEEN 0 AND 1"},
    "ops.ledger": {"rows_balance": "rows_in = rows_out + rows_dropped + rows_quarantined",
                   "counts_not_negative": "rows_out >= 0 AND rows_dropped >= 0 "
                                          "AND rows_quarantined >= 0"},
}
_SPARK_NAMES = {"long": "bigint", "integer": "int", "short": "smallint", "byte": "tinyint"}


def columns(ddl: str) -> list[tuple[str, str]]:
    """(name, type) of each column of a DDL string, types in Spark's ``simpleString`` form."""
    import re

    out, depth, start = [], 0, 0
    for i, c in enumerate(ddl + ","):
        depth += c == "<"
        depth -= c == ">"
        if c == "," and depth == 0:
            name, kind = ddl[start:i].strip().split(" ", 1)
            kind = re.sub(r"\b(long|integer|short|byte)\b", lambda m: _SPARK_NAMES[m[1]],
                          kind.strip().replace(" ", ""))
            out.append((name, kind))
            start = i + 1
    return out


def schema_mismatch(name: str, schema) -> str | None:
    """How ``schema`` (a Spark StructType) differs from table ``name``'s declaration, or None
    (also for a table without one)."""
    if name not in TABLE_SCHEMAS:
        return None
    want = columns(TABLE_SCHEMAS[name])
    got = [(f.name, f.dataType.simpleString()) for f in schema.fields]
    if got == want:
        return None
    missing = [f"{n} {t}" for n, t in want if (n, t) not in got]
    extra = [f"{n} {t}" for n, t in got if (n, t) not in want]
    detail = []
    if missing:
        detail.append(f"missing or retyped: {', '.join(missing)}")
    if extra:
        detail.append(f"not declared: {', '.join(extra)}")
    if not detail:
        detail.append(f"column order {[n for n, _ in got]} != {[n for n, _ in want]}")
    return f"{name} does not match its declaration in jobs/schemas.py: {'; '.join(detail)}"

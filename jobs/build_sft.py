"""Stage ``build_sft``: gold.samples (+ silver.commits, silver.chats) → gold.sft (+ gold.sft_skips,
gold.sft_token_stats).

1. Each sample, joined to its file's filter signals (silver.unique_files), becomes its SFT records
   on the executors (``udfs.sft.build_records``: templates, ChatML messages, augmentations checked
   by re-parsing, the quality score). A sample whose records raise is quarantined.
   With git sources, each silver.commits row becomes one record (``udfs.sft.commit_record``);
   with chat sources, each silver.chats row one (``udfs.sft.chat_record``). gold.sft's ``source``
   says which (``code``, ``git``, ``chat``).
2. ``write_tests``: a function is paired with a test function of the same repository (a test file —
   ``test_*.py``, ``*_test.go``, ``*.test.ts``, ``tests/`` … — whose body calls it by name); the
   assistant writes the test with an OpenAI-style ``write_file`` tool call. One test per function,
   the one with the smallest sample id.
3. **Language balance**: with ``sft.max_per_language`` / ``sft.language_caps``, each language keeps
   its highest-quality samples (window over the language, ties by source and sample id); the rest
   are dropped as ``language_cap`` with all their records.
   **Mixture**: with ``sft.mixture``, each source keeps its highest-quality records up to its
   share (``udfs.sft.mixture_counts``); cut records go to gold.sft_skips as ``mixture``, and a
   sample, commit or conversation left without a record is dropped as ``mixture``.
4. **Weight** = exp(5·(q − 0.7)), normalized to mean 1 over the table. **Split**: ``eval`` when a hash
   of ``split_seed`` and the group (``split_by``, the repo by default; a conversation, which has
   none, is its own group) falls under ``eval_fraction``, so a repo is never in both splits.
5. **Token counts** with ``sft.tokenizer`` (loaded once per Python worker, batched per Arrow batch):
   the conversation as the chat template renders it; ``truncated`` = longer than ``max_length``.
   gold.sft_token_stats holds p50/p90/p99/max and the count over ``max_length`` per split and
   language, per split and source (and ``all``).

The ledger counts samples, commits and conversations: kept (≥ 1 record), dropped
(``language_cap``, ``no_records``, ``mixture``), quarantined; ``output_rows`` counts records, and
``source_rows_in`` / ``source_rows_out`` the records per source before and after the mixture.
Each record names its sample (commit, conversation), file, repo, path and the Delta version of
the table it came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema, local_frame
from jobs.config import PipelineConfig
from jobs.pyworker import map_in_arrow
from jobs.schemas import MESSAGES
from jobs.stage import (
    DROPPED,
    KEPT,
    QUARANTINED,
    RowBuffer,
    Stage,
    StageResult,
)
from udfs.sft import raw_weight

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

SAMPLE_IN = ("sample_id", "file_id", "repo", "path", "language", "task_type", "split_method",
             "symbol", "symbol_kind", "context", "target", "prefix", "middle", "suffix", "spans",
             "cut", "parse_status")
SIGNALS = ("alpha_fraction", "max_line_length")
# one schema for the three kinds of rows the executor function yields
BUILT_SCHEMA = (
    "_kind string, source string, sample_id string, file_id string, repo string, path string, "
    "language string, source_task string, quality double, records long, _outcome string, "
    "_reason string, payload string, _bytes long, sft_id string, task_type string, "
    f"messages {MESSAGES}, reason string"
)
SFT_COLUMNS = ("sft_id", "source", "sample_id", "file_id", "repo", "path", "source_version",
               "task_type", "source_task", "language", "messages", "quality", "weight", "split",
               "chars", "token_count", "truncated")
# gold.sft's sources and the table each one's rows come from (``source_version`` is its version)
SOURCE_TABLES = {"code": "gold.samples", "git": "silver.commits", "chat": "silver.chats"}
TEST_FILE = (r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.(py|go)$|[^/]*Test\.java$|"
             r"[^/]*\.(test|spec)\.[jt]sx?$)")
TEST_NAME = r"^(test|Test|it_|should)"


def _build(templates_path: str, augmentations: frozenset[str], payload_chars: int,
           schema: pa.Schema):

    from udfs.instructions import Templates
    from udfs.records import preview
    from udfs.sft import build_records

    templates = Templates.load(templates_path)  # on the driver: executors get the object

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            buf = RowBuffer(schema)
            emit = buf.emit

            for s in batch.to_pylist():
                s["spans"] = dict(s["spans"] or [])
                base = {k: s[k] for k in ("sample_id", "file_id", "repo", "path", "language")}
                base["source"] = "code"
                base["_bytes"] = len((s.get("target") or s.get("middle") or "").encode())
                try:
                    records, skips = build_records(
                        s, templates, {k: s.get(k) for k in SIGNALS}, augmentations)
                except Exception as exc:  # noqa: BLE001 - one bad sample must not stop the job
                    emit(**base, _kind="sample", _outcome=QUARANTINED, records=0,
                         _reason=f"sft_error: {type(exc).__name__}: {exc}",
                         payload=preview(s.get("target") or s.get("middle"), payload_chars))
                    continue
                quality = records[0]["quality"] if records else None
                emit(**base, _kind="sample", source_task=s["task_type"], quality=quality,
                     records=len(records), _outcome=KEPT if records else DROPPED,
                     _reason=None if records else "no_records")
                for r in records:
                    emit(**{**base, "_bytes": None}, _kind="record", source_task=s["task_type"], sft_id=r["sft_id"],
                         task_type=r["task_type"], messages=r["messages"], quality=r["quality"])
                for k in skips:
                    emit(**{**base, "_bytes": None}, _kind="skip", source_task=s["task_type"],
                         task_type=k["task_type"], reason=k["reason"])
            yield buf.batch()

    return run


def _write_tests(samples: DataFrame, cfg: PipelineConfig, schema_ddl: str) -> DataFrame:
    """``write_tests`` records: (function, a test in its repo that calls it), rendered on executors."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fn = samples.where(F.col("task_type") == "function_completion")
    short = F.regexp_extract("symbol", r"([^.]+)$", 1)
    is_test = F.col("path").rlike(TEST_FILE) & short.rlike(TEST_NAME)
    tests = (fn.where(is_test)
             .select(F.col("repo"), F.col("sample_id").alias("test_id"),
                     F.col("path").alias("test_path"), F.col("context").alias("t_context"),
                     F.col("target").alias("t_target"), F.col("spans").alias("t_spans"),
                     F.explode(F.array_distinct(F.regexp_extract_all(
                         "target", F.lit(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\("), F.lit(1))))
                     .alias("called")))
    targets = fn.where(~is_test).withColumn("called", short)
    pairs = (targets.join(tests, ["repo", "called"])
             .withColumn("_n", F.row_number().over(
                 Window.partitionBy("sample_id").orderBy("test_id")))
             .where("_n = 1").drop("_n", "called"))
    from udfs.instructions import Templates

    # loaded here and shipped with the function: executors may not see the driver's files
    templates = Templates.load(str(cfg.sft.templates_path()))
    schema = arrow_schema(schema_ddl)

    def run(batches):
        import pyarrow as pa

        from udfs.sft import definition_of, quality_score, tool_call_record

        for batch in batches:
            rows = []
            for p in batch.to_pylist():
                p["spans"] = dict(p["spans"] or [])
                test = definition_of({"context": p["t_context"], "target": p["t_target"],
                                      "spans": dict(p["t_spans"] or [])})
                if test is None:
                    continue
                q, _ = quality_score({k: p.get(k) for k in SIGNALS} | {
                    "target": p["target"], "language": p["language"],
                    "parse_status": p["parse_status"], "split_method": p["split_method"],
                    "cut": p["cut"], "documented": False})
                r = tool_call_record(p, test[0], p["test_path"], templates, q)
                rows.append({"_kind": "record", "source": "code", "sample_id": p["sample_id"],
                             "file_id": p["file_id"], "repo": p["repo"], "path": p["path"],
                             "language": p["language"], "source_task": p["task_type"],
                             "sft_id": r["sft_id"], "task_type": "write_tests",
                             "messages": r["messages"], "quality": r["quality"]})
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return map_in_arrow(pairs, run, schema_ddl)


def _other_sources(templates_path: str, commit_tasks: tuple[str, ...], payload_chars: int,
                   schema: pa.Schema):
    """mapInArrow function: silver.commits or silver.chats rows (``_source`` says which) → one
    unit row and one record row each (``udfs.sft.commit_record`` / ``chat_record``)."""
    from udfs.instructions import Templates

    templates = Templates.load(templates_path)  # on the driver: executors get the object

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import json

        from udfs.records import preview
        from udfs.sft import chat_record, commit_record

        for batch in batches:
            buf = RowBuffer(schema)
            for row in batch.to_pylist():
                git = row["_source"] == "git"
                base = {"source": row["_source"], "sample_id": row["_id"], "repo": row["repo"],
                        "path": row["path"], "language": row["language"],
                        "source_task": "commit" if git else "chat", "_bytes": row["_bytes"]}
                try:
                    r = (commit_record(row["commit"], templates, commit_tasks) if git
                         else chat_record(row["chat"]))
                except Exception as exc:  # noqa: BLE001 - one bad row must not stop the job
                    buf.emit(**base, _kind="sample", _outcome=QUARANTINED, records=0,
                             _reason=f"sft_error: {type(exc).__name__}: {exc}",
                             payload=preview(json.dumps(row["commit"] or row["chat"],
                                                        default=str), payload_chars))
                    continue
                buf.emit(**base, _kind="sample", quality=r["quality"], records=1, _outcome=KEPT)
                buf.emit(**{**base, "_bytes": None}, _kind="record", sft_id=r["sft_id"],
                         task_type=r["task_type"], messages=r["messages"], quality=r["quality"])
            yield buf.batch()

    return run


def _units(inputs: dict[str, DataFrame]) -> DataFrame | None:
    """silver.commits and silver.chats rows as the input of ``_other_sources`` (None: neither)."""
    from pyspark.sql import functions as F

    parts = []
    if "silver.commits" in inputs:
        c = inputs["silver.commits"]
        parts.append(c.select(
            F.lit("git").alias("_source"), F.col("commit_id").alias("_id"), "repo",
            F.col("files")[0]["path"].alias("path"), "language",
            F.col("size_bytes").alias("_bytes"), F.struct(*c.columns).alias("commit"),
            F.lit(None).alias("chat")))
    if "silver.chats" in inputs:
        c = inputs["silver.chats"]
        parts.append(c.select(
            F.lit("chat").alias("_source"), F.col("chat_id").alias("_id"),
            F.lit(None).cast("string").alias("repo"), F.col("source").alias("path"), "language",
            F.octet_length(F.to_json("messages")).cast("long").alias("_bytes"),
            F.lit(None).alias("commit"), F.struct(*c.columns).alias("chat")))
    if not parts:
        return None
    if len(parts) == 2:  # each side's struct column is null in the other: give them its type
        parts[0] = parts[0].withColumn("chat", F.lit(None).cast(parts[1].schema["chat"].dataType))
        parts[1] = parts[1].withColumn("commit",
                                       F.lit(None).cast(parts[0].schema["commit"].dataType))
        return parts[0].unionByName(parts[1])
    return parts[0]


def _mixture(records: DataFrame, decided: DataFrame, shares: dict[str, float] | None):
    """(records kept, records cut as ``mixture``, decided with units left without a record
    dropped as ``mixture``, rows per source before and after) for the target ``shares``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from udfs.sft import mixture_counts

    before = {r["source"]: r["count"] for r in records.groupBy("source").count().collect()}
    if shares is None:
        return records, None, decided, before, before
    keep = mixture_counts(before, dict(shares))
    limit = F.lit(0)
    for source, n in keep.items():
        limit = F.when(F.col("source") == source, F.lit(n)).otherwise(limit)
    ranked = records.withColumn("_rank", F.row_number().over(Window.partitionBy("source").orderBy(
        F.col("quality").desc(), "sft_id"))).withColumn("_cut", F.col("_rank") > limit)
    kept = ranked.where(~F.col("_cut")).drop("_rank", "_cut")
    cut = ranked.where(F.col("_cut")).drop("_rank", "_cut")
    units = kept.select("source", "sample_id").distinct().withColumn("_has", F.lit(True))
    lost = (F.col("_outcome") == KEPT) & F.col("_has").isNull()
    decided = (decided.join(units, ["source", "sample_id"], "left").withColumn("_lost", lost)
               .withColumn("_outcome", F.when(F.col("_lost"), DROPPED)
                           .otherwise(F.col("_outcome")))
               .withColumn("_reason", F.when(F.col("_lost"), "mixture")
                           .otherwise(F.col("_reason")))
               .drop("_has", "_lost"))
    return kept, cut, decided, before, {s: keep.get(s, 0) for s in before}


def _count_tokens(tokenizer: str, max_length: int, schema: pa.Schema):
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.chatml import count_tokens, load_tokenizer

        tok = load_tokenizer(tokenizer)
        for batch in batches:
            convs = batch.column("messages").to_pylist()
            counts = count_tokens(tok, convs)
            batch = batch.append_column("token_count", pa.array(counts, pa.int64()))
            batch = batch.append_column(
                "truncated", pa.array([c > max_length for c in counts], pa.bool_()))
            yield batch.select(schema.names)

    return run


def token_stats(sft: DataFrame) -> DataFrame:
    """p50/p90/p99/max token counts and rows over max length, per split × language (all sources),
    per split × source (all languages), and overall."""
    from pyspark.sql import functions as F

    def agg(df, split, language, source):
        return df.groupBy(split.alias("split"), language.alias("language"),
                          source.alias("source")).agg(
            F.count(F.lit(1)).alias("records"),
            F.expr("percentile(token_count, 0.5)").alias("p50"),
            F.expr("percentile(token_count, 0.9)").alias("p90"),
            F.expr("percentile(token_count, 0.99)").alias("p99"),
            F.max("token_count").alias("max"),
            F.sum(F.col("truncated").cast("long")).alias("over_max_length"))

    every = F.lit("all")
    return (agg(sft, F.col("split"), F.col("language"), every)
            .unionByName(agg(sft, F.col("split"), every, F.col("source")))
            .unionByName(agg(sft, every, every, F.col("source")))
            .unionByName(agg(sft, F.col("split"), every, every))
            .unionByName(agg(sft, every, every, every)))


def _source_versions(spark: SparkSession, cfg: PipelineConfig) -> dict[str, int | None]:
    """The latest version of each source's table (None where it does not exist)."""
    from jobs.lakehouse import Lakehouse

    lake = Lakehouse(spark, cfg.lakehouse)
    return {source: lake.version(table) if lake.exists(table) else None
            for source, table in SOURCE_TABLES.items()}


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    settings = cfg.sft
    chars = cfg.ingest.quarantine_payload_chars
    samples = inputs["gold.samples"].select(*SAMPLE_IN)
    signals = inputs["silver.unique_files"].select(F.col("id").alias("file_id"), *SIGNALS)
    joined = samples.join(signals, "file_id", "left")
    augs = frozenset(settings.augmentations)
    schema = arrow_schema(BUILT_SCHEMA)
    templates = str(settings.templates_path())
    built = map_in_arrow(joined, _build(templates, augs, chars, schema), BUILT_SCHEMA)
    if "write_tests" in augs:
        built = built.unionByName(_write_tests(joined, cfg, BUILT_SCHEMA))
    input_rows = samples.select(F.coalesce(F.octet_length("target"), F.octet_length("middle"),
                                           F.lit(0)).cast("long").alias("_bytes"))
    units = _units(inputs)
    if units is not None:
        built = built.unionByName(map_in_arrow(
            units, _other_sources(templates, settings.commit_tasks, chars, schema),
            BUILT_SCHEMA))
        input_rows = input_rows.unionByName(units.select("_bytes"))
    built = built.persist(StorageLevel.MEMORY_AND_DISK)

    decided = built.where(F.col("_kind") == "sample").drop("messages")
    caps = settings.language_caps
    if settings.max_per_language is not None or caps:
        default = settings.max_per_language
        cap = F.lit(default).cast("long") if default is not None else F.lit(None).cast("long")
        for lang, n in caps.items():
            cap = F.when(F.col("language") == lang, F.lit(n)).otherwise(cap)
        rank = F.row_number().over(Window.partitionBy("language").orderBy(
            F.col("quality").desc(), "source", "sample_id"))
        kept = F.col("_outcome") == KEPT
        over = kept & cap.isNotNull() & (F.when(kept, rank) > cap)
        decided = (decided.withColumn("_over", over)
                   .withColumn("_outcome", F.when(F.col("_over"), DROPPED)
                               .otherwise(F.col("_outcome")))
                   .withColumn("_reason", F.when(F.col("_over"), "language_cap")
                               .otherwise(F.col("_reason")))
                   .drop("_over"))
    keep_ids = decided.where(F.col("_outcome") == KEPT).select("source", "sample_id")
    records = built.where(F.col("_kind") == "record").join(keep_ids, ["source", "sample_id"],
                                                           "left_semi")
    records, cut, decided, rows_before, rows_after = _mixture(records, decided, settings.mixture)
    decided = decided.persist(StorageLevel.MEMORY_AND_DISK)

    raw = raw_weight(F.col("quality"), F.exp)
    # the mean in exact decimal arithmetic: a double sum depends on partition order, and reruns
    # must write identical weights
    mean_raw = float(records.agg(F.avg(raw.cast("decimal(38,18)"))).first()[0] or 1.0)
    # a conversation has no repository (and a commit no file): its own id is its group
    group = F.coalesce(F.col(settings.split_by), F.col("sample_id"))
    bucket = F.conv(F.substring(F.sha2(F.concat_ws("\0", F.lit(settings.split_seed), group),
                                       256), 1, 8), 16, 10).cast("double") / float(0x100000000)
    versions = _source_versions(spark, cfg)
    version = F.lit(None).cast("long")
    for source, v in versions.items():
        version = F.when(F.col("source") == source, F.lit(v).cast("long")).otherwise(version)
    sft = records.select(
        "sft_id", "source", "sample_id", "file_id", "repo", "path",
        version.alias("source_version"),
        "task_type", "source_task", "language", F.col("messages").cast(MESSAGES),
        "quality", (raw / F.lit(mean_raw)).alias("weight"),
        F.when(bucket < settings.eval_fraction, "eval").otherwise("train").alias("split"),
        # computed in the JVM, so that the run report's length plot never reads the messages
        F.aggregate("messages", F.lit(0).cast("long"),
                    lambda total, m: total + F.coalesce(F.length(m["content"]), F.lit(0)))
        .alias("chars"))
    if settings.tokenizer:
        ddl = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in sft.schema.fields)
        ddl += ", token_count long, truncated boolean"
        sft = map_in_arrow(sft, _count_tokens(settings.tokenizer, settings.max_length,
                                              arrow_schema(ddl)), ddl)
    else:
        sft = sft.withColumn("token_count", F.lit(None).cast("long")).withColumn(
            "truncated", F.lit(None).cast("boolean"))
    sft = sft.select(*SFT_COLUMNS)
    if settings.tokenizer:
        # the table and its token statistics both read the counts: the tokenizer runs once.
        # Without one, only the write reads it, and a cache would cost a pass of its own.
        sft = sft.persist(StorageLevel.MEMORY_AND_DISK)
    skip_columns = ("sample_id", "file_id", "repo", "path", "language", "source_task",
                    "task_type", "reason")
    skips = built.where(F.col("_kind") == "skip").select(*skip_columns)
    if cut is not None:
        skips = skips.unionByName(cut.withColumn("reason", F.lit("mixture")).select(*skip_columns))
    extra = {"gold.sft_skips": skips}
    if settings.tokenizer:
        extra["gold.sft_token_stats"] = token_stats(sft)
    quarantined = F.col("_outcome") == QUARANTINED
    source_table = F.lit(None).cast("string")
    for source, table in SOURCE_TABLES.items():
        source_table = F.when(F.col("source") == source, F.lit(table)).otherwise(source_table)
    decided = decided.select(
        "sample_id", F.col("file_id").alias("id"), "repo", "path", "language", "_outcome",
        "_reason", "_bytes",
        F.when(quarantined, source_table).alias("source_kind"),
        F.when(quarantined, F.col("sample_id")).alias("source"), "payload",
        F.to_json(F.struct(F.col("source").alias("sft_source"), "source_task", "quality"))
        .alias("detail"))
    by_source = local_frame(spark, [{"source": k, "rows_in": v, "rows_out": rows_after.get(k, 0)}
                                    for k, v in sorted(rows_before.items())],
                            "source string, rows_in long, rows_out long")
    return StageResult(
        input_rows=input_rows, decided=decided, kept_columns=(), output=sft,
        persisted=[built, decided] + ([sft] if settings.tokenizer else []), extra_outputs=extra,
        by_source=by_source)


def _extra_inputs(cfg: PipelineConfig) -> tuple[str, ...]:
    from jobs.config import ChatSource, GitSource

    return ((("silver.commits",) if cfg.ingest.of(GitSource) else ())
            + (("silver.chats",) if cfg.ingest.of(ChatSource) else ()))


STAGE = Stage(
    name="build_sft", inputs=("gold.samples", "silver.unique_files"), output="gold.sft",
    build=build, inputs_when=_extra_inputs,
    description="code samples, commits and chats → ChatML records: templates, augmentation, "
                "quality weights, balance, mixture, split, tokens",
)

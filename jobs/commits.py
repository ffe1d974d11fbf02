"""Stage ``commits``: git sources (``ingest.sources: [{kind: git, path: REPO}]``) → silver.commits.

1. The driver walks each repository's history (``udfs.commits.list_commits``: object ids and
   parent counts only, milliseconds per thousand commits) and spreads the commits over tasks.
2. Each executor task opens every repository it meets once (``CommitReader``) and turns each
   commit into its example or a named skip (``udfs.commits``: merges, uninformative messages,
   lockfile/vendored/generated-only, whitespace- or formatting-only, huge). Author and committer
   names and e-mails are replaced wherever they appear; messages and code are redacted.
3. A commit reached from two clones (or two sources) counts once: the copy of the first
   repository by name that can be read is decided, the others are ``duplicate_commit``; the
   same change under the same message with another id (a cherry-pick, a rebased copy) is
   ``duplicate_change``.

A repository that cannot be opened or walked is one quarantine row naming its path; a commit that
cannot be read, one naming ``<path>@<commit id>``. Repositories must sit on storage every executor
mounts (local disk for local runs; NFS, /dbfs or /Volumes on a cluster), like tree sources.
``bytes_in`` is 0 (a listing has no size); ``bytes_out`` is the size of the examples written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema, local_frame
from jobs.config import GitSource, PipelineConfig
from jobs.pyworker import map_in_arrow
from jobs.schemas import COMMIT_FILES
from jobs.session import default_parallelism
from jobs.stage import DROPPED, KEPT, QUARANTINED, RowBuffer, Stage, StageResult

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

LISTING = "repo string, path string, commit_id string, _error string"
DECIDED_SCHEMA = (
    "id string, repo string, path string, subject string, message string, language string, "
    f"files {COMMIT_FILES}, lines_added long, lines_removed long, size_bytes long, "
    "redactions map<string,int>, change_key string, detail string, source_kind string, "
    "source string, _outcome string, _reason string, _bytes long"
)
COMMIT_COLUMNS = ("commit_id", "repo", "subject", "message", "language", "files", "lines_added",
                  "lines_removed", "size_bytes", "redactions")
# commits per executor task: a few seconds of diffs each, and every core busy
COMMITS_PER_TASK = 500


def repositories(src: GitSource) -> list[tuple[str, str, str | None]]:
    """(name, path, problem) of the source's repositories: ``path`` itself (layout ``repo``), or
    every folder directly under it (``repos``), each with None, or why it is not one."""
    from udfs.commits import GitUnreadable, open_repository

    root = Path(src.path)
    if src.layout == "repo":
        return [(src.name or root.resolve().name, str(root), None)]
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            open_repository(str(folder))
            out.append((folder.name, str(folder), None))
        except GitUnreadable as exc:
            out.append((folder.name, str(folder), str(exc)))
    return out


def _listing(spark: SparkSession, sources: list[GitSource]) -> DataFrame:
    from udfs.commits import GitUnreadable, list_commits

    rows = []
    for src in sources:
        for name, path, problem in repositories(src):
            if problem is None:
                try:
                    rows += [{"repo": name, "path": path, "commit_id": oid}
                             for oid, _ in list_commits(path, src.refs)]
                    continue
                except GitUnreadable as exc:
                    problem = str(exc)
            rows.append({"repo": name, "path": path, "commit_id": None, "_error": problem})
    listing = local_frame(spark, rows, LISTING)
    parts = max(default_parallelism(spark), len(rows) // COMMITS_PER_TASK + 1)
    return listing.repartition(parts, "commit_id")


def _decide(params, schema: pa.Schema):
    """mapInArrow function: listed commits → their examples or skips."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.commits import CommitReader, GitUnreadable, change_key

        reader = CommitReader(params)  # one per task: each repository opened once
        for batch in batches:
            buf = RowBuffer(schema)
            for c in batch.to_pylist():
                base = {"id": c["commit_id"], "repo": c["repo"], "source_kind": "git",
                        "source": c["path"] + (f"@{c['commit_id']}" if c["commit_id"] else ""),
                        "_bytes": 0}
                if c["_error"]:
                    buf.emit(**base, _outcome=QUARANTINED, _reason=c["_error"])
                    continue
                try:
                    out = reader.read(c["path"], c["commit_id"])
                except GitUnreadable as exc:
                    buf.emit(**base, _outcome=QUARANTINED, _reason=str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - one bad commit must not stop the run
                    buf.emit(**base, _outcome=QUARANTINED,
                             _reason=f"commit_error: {type(exc).__name__}: {exc}"[:500])
                    continue
                if out["reason"]:
                    buf.emit(**base, _outcome=DROPPED, _reason=out["reason"],
                             detail=out["detail"])
                    continue
                buf.emit(**{**base, "_bytes": out["size_bytes"]}, _outcome=KEPT,
                         path=out["files"][0]["path"], change_key=change_key(
                             out["subject"], out["files"]),
                         **{k: out[k] for k in ("subject", "message", "language", "files",
                                                "lines_added", "lines_removed", "size_bytes",
                                                "redactions")})
            yield buf.batch()

    return run


def _once(decided: DataFrame) -> DataFrame:
    """A commit id decided once (the first repository's copy that could be read), a change kept
    once (its first kept copy)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def demote(df, key, reason, among):
        # the rows that take part come first, so a copy that could not be read (or was dropped
        # already) never stands in for one that was
        order = Window.partitionBy(key).orderBy(F.when(among, 0).otherwise(1), "repo", "source")
        first, n = F.first("repo").over(order), F.row_number().over(order)
        hit = among & F.col(key).isNotNull() & (n > 1)
        return (df.withColumn("_hit", hit).withColumn("_first", first)
                .withColumn("_outcome", F.when(F.col("_hit"), DROPPED).otherwise(F.col("_outcome")))
                .withColumn("_reason", F.when(F.col("_hit"), reason).otherwise(F.col("_reason")))
                .withColumn("detail", F.when(F.col("_hit"), F.concat(F.lit("first seen in "),
                                                                     F.col("_first")))
                            .otherwise(F.col("detail")))
                .withColumn("_bytes", F.when(F.col("_hit"), 0).otherwise(F.col("_bytes")))
                .drop("_hit", "_first"))

    out = demote(decided, "id", "duplicate_commit", F.col("_outcome") != QUARANTINED)
    return demote(out, "change_key", "duplicate_change", F.col("_outcome") == KEPT)


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    listing = _listing(spark, cfg.ingest.of(GitSource))
    decided = map_in_arrow(listing, _decide(cfg.commits.params(), arrow_schema(DECIDED_SCHEMA)),
                           DECIDED_SCHEMA)
    decided = _once(decided).persist(StorageLevel.MEMORY_AND_DISK)
    output = decided.where(F.col("_outcome") == KEPT).select(
        F.col("id").alias("commit_id"), *COMMIT_COLUMNS[1:])
    return StageResult(input_rows=listing.select(F.lit(0).cast("long").alias("_bytes")),
                       decided=decided, kept_columns=(), output=output, persisted=[decided])


STAGE = Stage(
    name="commits", inputs=(), output="silver.commits", build=build,
    description="git history → one example per meaningful commit, skips named, authors removed",
)

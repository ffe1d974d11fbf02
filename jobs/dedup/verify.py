"""Step 5, verify: a candidate edge survives only if the two files' Jaccard similarity is
≥ ``dedup.threshold``.

With ``verify: exact`` (default) an estimate within ``verify_margin`` of the threshold is replaced
by the exact Jaccard of the two files' shingle sets, computed from the text of just those files (a
second, filtered read of the files); estimates farther away decide alone. The estimate's standard
deviation is √(J(1−J)/num_perm), 0.029 at J = 0.7 with 256 permutations, so the default margin of
0.15 is more than 5σ: a pair on the wrong side of it is a one-in-ten-million event. Carrying every
file's shingle set instead (4 bytes per distinct shingle, about half the text) would move most of
the corpus through the shuffle to recompute the few pairs near the threshold. ``signature`` takes
the estimate; ``none`` keeps every candidate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema
from jobs.dedup.arrays import buffers, signatures, uint32_column, uint32_rows
from jobs.direct_io import map_parquet_in_arrow
from jobs.pyworker import map_in_arrow
from udfs.minhash import distinct_shingles, estimated_jaccard, set_jaccards, shingle_hashes

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from jobs.config import DedupSettings

SETS_SCHEMA = "id string, shingle_set binary"
PAIR_SCHEMA = "src string, dst string"


def shingle_set_batches(d: DedupSettings, schema: pa.Schema, wanted: list[str] | None = None):
    """mapInArrow function: (id, text) → (id, shingle_set): the file's distinct shingle hashes,
    sorted, as little-endian uint32s; with ``wanted``, only the rows whose id is in it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        keep = None if wanted is None else pa.array(wanted, pa.string())
        for batch in batches:
            if keep is not None:
                batch = batch.filter(pc.is_in(batch.column("id"), value_set=keep))
                if batch.num_rows == 0:
                    continue
            data, offsets = buffers(batch.column("text"))
            values, sizes = distinct_shingles(*shingle_hashes(data, offsets, d.ngram, d.hash))
            yield pa.RecordBatch.from_arrays([batch.column("id"), uint32_column(values, sizes)],
                                             schema=schema)

    return run


def jaccard_batches(mode: str, num_perm: int, keep: tuple[str, ...], schema: pa.Schema):
    """mapInArrow function: rows with binary columns ``a``/``b`` → ``keep`` + ``jaccard``.
    mode ``exact``: a and b are sorted shingle-hash sets; ``signature``: MinHash signatures."""
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if mode == "exact":
                (a, a_counts), (b, b_counts) = (uint32_rows(batch.column("a")),
                                                uint32_rows(batch.column("b")))
                j = set_jaccards(a, a_counts, b, b_counts)
            else:
                j = estimated_jaccard(signatures(batch.column("a"), num_perm),
                                      signatures(batch.column("b"), num_perm))
            arrays = [batch.column(name) for name in keep] + [pa.array(j, pa.float64())]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return run


def with_jaccard(df: DataFrame, d: DedupSettings, mode: str, keep: tuple[str, ...],
                 types: str) -> DataFrame:
    """``df``'s ``keep`` columns (of ``types``) and the Jaccard of its ``a`` and ``b`` columns."""
    schema = f"{types}, jaccard double"
    return map_in_arrow(df.select(*keep, "a", "b"),
                        jaccard_batches(mode, d.num_perm, keep, arrow_schema(schema)), schema)


def pairs_with(edges: DataFrame, side: DataFrame, value: str) -> DataFrame:
    """Edges (src, dst) with the ``value`` column of src as ``a`` and of dst as ``b``."""
    from pyspark.sql import functions as F

    return (edges.join(side.select(F.col("id").alias("src"), F.col(value).alias("a")), "src")
            .join(side.select(F.col("id").alias("dst"), F.col(value).alias("b")), "dst"))


def estimated(edges: DataFrame, reps: DataFrame, d: DedupSettings) -> DataFrame:
    """Edges (src, dst) with the signatures' estimate of their Jaccard similarity as ``jaccard``;
    ``reps`` holds every end's ``id`` and ``signature``."""
    return with_jaccard(pairs_with(edges, reps, "signature"), d, "signature", ("src", "dst"),
                        PAIR_SCHEMA)


def _exact_in_one_task_batches(schema: pa.Schema):
    """mapInArrow function for one task: rows that are either a file's shingle set (``id``,
    ``shingle_set``) or a pair to verify (``src``, ``dst``) → ``src``, ``dst``, ``jaccard``, the
    exact Jaccard of every pair, each set held once however many pairs it is in."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from udfs.minhash import indexed_set_jaccards

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches([b for b in batches if b.num_rows])
        if table.num_rows == 0:
            return
        is_set = pc.is_valid(table.column("id"))
        sets, pairs = table.filter(is_set), table.filter(pc.invert(is_set))
        # one id ingested twice has one text (the id hashes it), so one set: keep the first
        first = pc.equal(pc.index_in(sets.column("id"), value_set=sets.column("id")),
                         pa.array(np.arange(sets.num_rows)))
        sets = sets.filter(first)
        values, sizes = uint32_rows(sets.column("shingle_set"))
        a = pc.index_in(pairs.column("src"), value_set=sets.column("id"))
        b = pc.index_in(pairs.column("dst"), value_set=sets.column("id"))
        if a.null_count or b.null_count:  # every end was read from the files: a broken input
            raise RuntimeError(f"{a.null_count + b.null_count} pair ends have no shingle set")
        jaccard = indexed_set_jaccards(values, sizes, a.to_numpy(), b.to_numpy())
        yield pa.RecordBatch.from_arrays(
            [pairs.column("src").combine_chunks(), pairs.column("dst").combine_chunks(),
             pa.array(jaccard, pa.float64())], schema=schema)

    return run


def verified(scored: DataFrame, files: DataFrame, d: DedupSettings, one_task: bool = False,
             tasks: list[list[str]] | None = None) -> DataFrame:
    """The edges (src, dst) of ``scored`` (every candidate with the signatures' estimate as
    ``jaccard``) whose Jaccard similarity is ≥ ``d.threshold`` (module docstring).

    ``one_task``: the pairs and the shingle sets they need go to one task, which holds each set
    once (the candidates came from one task: they are few); else both sets are joined to every
    pair across the cluster. ``tasks``: ``files``' own Parquet files in tasks
    (``dedup.tuning.direct_reads``); then, for up to ``tuning.broadcast_rows`` files, the tasks
    read the text themselves and keep those files' rows.
    """
    from pyspark.sql import functions as F

    if d.verify == "signature" or d.verify_margin == 0:
        return scored.where(F.col("jaccard") >= d.threshold).select("src", "dst")
    t = d.tuning
    scored = scored.localCheckpoint(eager=True)
    low, high = d.threshold - d.verify_margin, d.threshold + d.verify_margin
    sure = scored.where(F.col("jaccard") >= high).select("src", "dst")
    unsure = scored.where((F.col("jaccard") > low) & (F.col("jaccard") < high))
    ids = (unsure.select(F.col("src").alias("id")).union(unsure.select(F.col("dst").alias("id")))
           .distinct())
    sets = None
    if tasks is not None:
        few = [r["id"] for r in ids.limit(t.broadcast_rows + 1).collect()]
        if not few:
            return sure
        if len(few) <= t.broadcast_rows:
            sets = map_parquet_in_arrow(
                files.sparkSession, tasks, files.select("id", "text").schema,
                shingle_set_batches(d, arrow_schema(SETS_SCHEMA), few), SETS_SCHEMA)
    if sets is None:
        ids = ids.localCheckpoint(eager=True)
        count = ids.count()
        if count == 0:
            return sure
        wanted = F.broadcast(ids) if count <= t.broadcast_rows else ids  # else the text is shuffled
        sets = map_in_arrow(files.join(wanted, "id", "left_semi").select("id", "text"),
                            shingle_set_batches(d, arrow_schema(SETS_SCHEMA)), SETS_SCHEMA)
    if one_task:
        none = F.lit(None).cast("string")
        tagged = sets.select("id", "shingle_set", none.alias("src"), none.alias("dst")).unionByName(
            unsure.select(none.alias("id"), F.lit(None).cast("binary").alias("shingle_set"),
                          "src", "dst"))
        out = "src string, dst string, jaccard double"
        exact = map_in_arrow(tagged.repartition(1),
                             _exact_in_one_task_batches(arrow_schema(out)), out)
    else:
        sets = sets.dropDuplicates(["id"])  # one id ingested twice has one text (the id hashes it)
        exact = with_jaccard(pairs_with(unsure.select("src", "dst"), sets, "shingle_set"), d,
                             "exact", ("src", "dst"), PAIR_SCHEMA)
    return sure.unionByName(exact.where(F.col("jaccard") >= d.threshold).select("src", "dst"))

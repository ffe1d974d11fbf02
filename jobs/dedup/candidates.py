"""Steps 3 and 4, band and candidates: each signature is cut into ``bands`` keys of ``rows``
values; files that share a key form a bucket. With verification, a bucket of up to
``all_pairs_bucket`` files proposes every pair (verification must not cut a file loose only
because it is not similar enough to the bucket's smallest id), a larger one star edges to its
smallest file id; without, every bucket is a star. Keys are grouped by a 64-bit hash of the band
number and its values: two keys sharing a hash (about n²/2^65 pairs for n keys) only propose one
more candidate, which verification then drops.

Two ways to the same pairs, by input size (``dedup.tuning.one_task_files``):
``in_one_task``, all signatures in one executor task (``udfs.minhash.candidate_pairs``) with the
signatures' estimate of every pair, and ``distributed``, band keys exploded and grouped across the
cluster. Why both: the grouping, distinct and the two joins that fetch both signatures of every
pair cost Spark jobs and shuffles of fixed latency that a single process does not pay
(bench/RESULTS.md, "Dedup's second paths"); one process holds only so many signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema
from jobs.dedup.arrays import signatures
from jobs.pyworker import map_in_arrow

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from jobs.config import DedupSettings

SCORED_SCHEMA = "src string, dst string, jaccard double"


def _all_pairs_bucket(d: DedupSettings) -> int:
    return d.all_pairs_bucket if d.verify != "none" else 1  # 1: every bucket is a star


def in_one_task(reps: DataFrame, d: DedupSettings) -> DataFrame:
    """(src, dst, jaccard) of every candidate pair, src > dst, with the signatures' estimate,
    computed by one executor task. ``reps``: id, signature of every file to compare."""
    bands, rows = d.banding()
    all_pairs = _all_pairs_bucket(d)
    schema = arrow_schema(SCORED_SCHEMA)
    in_schema = arrow_schema("id string, signature binary")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.minhash import candidate_pairs, pair_estimates

        table = pa.Table.from_batches([b for b in batches if b.num_rows], schema=in_schema)
        table = table.take(pc.sort_indices(table, [("id", "ascending")]))  # Spark's byte order
        ids = table.column("id").combine_chunks()
        sigs = signatures(table.column("signature"), d.num_perm)
        src, dst = candidate_pairs(sigs, bands, rows, all_pairs)
        jaccard = pair_estimates(sigs, src, dst)
        for lo in range(0, len(src), 1 << 16):
            hi = lo + (1 << 16)
            yield pa.RecordBatch.from_arrays(
                [ids.take(pa.array(src[lo:hi])), ids.take(pa.array(dst[lo:hi])),
                 pa.array(jaccard[lo:hi], pa.float64())], schema=schema)

    return map_in_arrow(reps.select("id", "signature").repartition(1), run, SCORED_SCHEMA)


def distributed(reps: DataFrame, d: DedupSettings) -> DataFrame:
    """(src, dst) of every candidate pair, src > dst, with the DataFrame API."""
    from pyspark.sql import functions as F

    bands, rows = d.banding()
    width = 4 * rows
    # band i's key: bytes [i·width, (i+1)·width) of the signature, hashed with i
    keys = F.array(*[F.xxhash64(F.lit(i), F.substring("signature", i * width + 1, width))
                     for i in range(bands)])
    buckets = (reps.select("id", F.explode(keys).alias("key"))
               .groupBy("key").agg(F.sort_array(F.collect_list("id")).alias("ids"))
               .where(F.size("ids") > 1))
    n = "size(ids)"
    star = f"transform(slice(ids, 2, {n} - 1), y -> named_struct('src', y, 'dst', ids[0]))"
    every_pair = (f"flatten(transform(sequence(1, {n} - 1), i -> transform("
                  f"slice(ids, i + 1, {n} - i), y -> named_struct('src', y, 'dst', ids[i - 1]))))")
    pairs = f"IF({n} <= {_all_pairs_bucket(d)}, {every_pair}, {star})"
    return buckets.select(F.explode(F.expr(pairs)).alias("e")).select("e.src", "e.dst").distinct()

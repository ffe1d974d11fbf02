"""Stage ``dedup``: silver.files → silver.unique_files (+ silver.dup_clusters, silver.rejects).

1. **Signatures** (one pass, Arrow batches on executors): every file's ``content_hash`` over the
   normalized text and its MinHash signature (``udfs.minhash`` states the normalization, tokens,
   shingles, hash and permutations; signatures equal datasketch's).
2. **Exact duplicates**: files with one ``content_hash`` keep the first by the *rank* below; the
   others are dropped as ``exact_duplicate``.
3. **Near duplicates** among the exact survivors: each signature is cut into ``bands`` keys of
   ``rows`` values (binary, grouped by their 64-bit hash); files that share a key form a bucket.
   With verification (``dedup.verify``, default ``exact``), a bucket of up to
   ``all_pairs_bucket`` files proposes every pair and a larger one star edges to its smallest
   file id; a proposed edge survives only if the two files' Jaccard similarity is
   ≥ ``dedup.threshold``: estimated from the signatures, and with ``exact`` (default) recomputed
   exactly on the two files' shingle-hash sets when the estimate is within
   ``dedup.verify_margin`` of the threshold (``verified_edges``). Without verification every
   bucket is a star. ``jobs.components`` then finds the connected components:
   large-star/small-star rounds on the cluster, or one executor task when the graph has at most
   ``dedup.one_task_edges`` edges (the same labels, without the rounds' fixed costs); when the
   candidate pairs came from one task (up to ``dedup.one_task_files`` files), the components and
   their representatives come from one task as well. A component's id is its smallest file id,
   so two runs give identical tables.
   Each component keeps its first file by rank; the others are dropped as ``near_duplicate``.
4. Every dropped file goes to silver.rejects with ``detail`` = JSON of its cluster (kind, cluster
   id, representative, Jaccard to the representative) and without its text (it stays in
   silver.files at the version the ledger pins; ``dedup.rejects_text`` copies it), and every
   cluster of two or more files to silver.dup_clusters (members, representative, size, max/min
   Jaccard of the members to the representative). The Jaccard of a member to its representative
   is the signatures' estimate (± 0.03 at 256 permutations); a member can be below the threshold
   when it joined the cluster through another member. A file whose hashing raised is quarantined with the error.

**Rank** (the representative rule, the same for exact and near clusters): most permissive license
first (``udfs.licenses.PERMISSIVENESS``), then most stars, then the quality signals the filter
computed (higher ``alpha_fraction``, then shorter ``max_line_length``), then ``path``, ``repo``
and ``id`` in ascending order, so ties always break the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema, local_frame
from jobs.components import connected_components
from jobs.config import DedupSettings, PipelineConfig
from jobs.direct_io import (
    WRITTEN_SCHEMA,
    local_parquet_files,
    map_parquet_in_arrow,
    parquet_file_writer,
    parquet_tasks,
)
from jobs.filtering import SIGNALS
from jobs.lakehouse import Lakehouse
from jobs.pyworker import map_in_arrow
from jobs.schemas import FILE_COLUMNS
from jobs.stage import (
    DROPPED,
    KEPT,
    QUARANTINED,
    Stage,
    StageResult,
)
from udfs.licenses import PERMISSIVENESS, permissiveness_rank
from udfs.minhash import (
    MinHasher,
    content_hashes,
    distinct_shingles,
    estimated_jaccard,
    set_jaccards,
    shingle_hashes,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

STAGE_NAME = "dedup"
INPUT_COLUMNS = FILE_COLUMNS + tuple(s.split(" ")[0] for s in SIGNALS.split(", "))
SIGNED_SCHEMA = (
    "id string, repo string, path string, language string, license string, stars long, "
    f"size_bytes long, {SIGNALS}, content_hash string, signature binary, shingles long, "
    "_error string"
)


# ---------------------------------------------------------------------------------------------
# Executor-side functions (Arrow batches in, Arrow batches out)


def _buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets) of an Arrow string or binary column without copying; nulls read as empty."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        column = pc.fill_null(column, pa.scalar(b"" if pa.types.is_binary(column.type) else "",
                                                column.type))
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    wide = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    _, offsets, data = column.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32)
    offsets = offsets[column.offset:column.offset + len(column) + 1].astype(np.int64)
    return np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8), offsets


def _uint32_rows(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A binary column whose rows are runs of little-endian uint32s (signatures, shingle sets):
    all its values concatenated (zero-copy) and the count per row."""
    import numpy as np

    data, offsets = _buffers(column)
    return data[offsets[0]:offsets[-1]].view("<u4"), np.diff(offsets) // 4


def _binary_column(data: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A binary column built from its buffers: row i is the next ``lengths[i]`` bytes of ``data``
    where ``valid[i]``, else null (its bytes must not be in ``data``). No Python object per row."""
    import numpy as np
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(np.where(valid, lengths, 0), out=offsets[1:])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(lengths), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=int(len(valid) - valid.sum()))


def _sign(d: DedupSettings, schema: pa.Schema):
    """mapInArrow function: files → the same rows without their text, plus content_hash, signature
    (binary, little-endian uint32s), shingles and _error."""
    import numpy as np
    import pyarrow as pa

    def signatures(data: np.ndarray, offsets: np.ndarray, hasher: MinHasher):
        hashes, counts = shingle_hashes(data, offsets, d.ngram, d.hash)
        return hasher.signatures(hashes, counts), counts

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        hasher = MinHasher(d.num_perm, d.seed)
        for batch in batches:
            texts = batch.column("text")
            n = batch.num_rows
            errors: list[str | None] = [None] * n
            try:
                data, offsets = _buffers(texts)
                hashes = content_hashes(data, offsets)
                sigs, counts = signatures(data, offsets, hasher)
            except Exception:  # noqa: BLE001 - find the file that raised, one at a time
                hashes = [None] * n
                sigs = np.zeros((n, d.num_perm), dtype=np.uint32)
                counts = np.zeros(n, dtype=np.int64)
                for i in range(n):
                    one = _buffers(texts.slice(i, 1))
                    try:
                        [hashes[i]] = content_hashes(*one)
                    except Exception as exc:  # noqa: BLE001 - quarantine the file, not the job
                        errors[i] = f"hash_error: {type(exc).__name__}: {exc}"
                        continue
                    try:
                        s, c = signatures(*one, hasher)
                        sigs[i], counts[i] = s[0], c[0]
                    except Exception as exc:  # noqa: BLE001
                        errors[i] = f"minhash_error: {type(exc).__name__}: {exc}"
            ok = (counts > 0) & np.array([e is None for e in errors], dtype=bool)
            signature = _binary_column(
                np.ascontiguousarray(sigs[ok], dtype="<u4").view(np.uint8).ravel(),
                np.full(n, 4 * d.num_perm), ok)
            columns = {name: batch.column(name) for name in batch.schema.names}
            columns.update(content_hash=pa.array(hashes, pa.string()), signature=signature,
                           shingles=pa.array(counts, pa.int64()),
                           _error=pa.array(errors, pa.string()))
            yield pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)

    return run


def _shingle_sets(d: DedupSettings, schema: pa.Schema, wanted: list[str] | None = None):
    """mapInArrow function: (id, text) → (id, shingle_set): the file's distinct shingle hashes,
    sorted, as little-endian uint32s. Only for files whose exact Jaccard is needed: the rows it
    gets, or with ``wanted``, the rows whose id is in it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        keep = None if wanted is None else pa.array(wanted, pa.string())
        for batch in batches:
            if keep is not None:
                batch = batch.filter(pc.is_in(batch.column("id"), value_set=keep))
                if batch.num_rows == 0:
                    continue
            data, offsets = _buffers(batch.column("text"))
            values, sizes = distinct_shingles(*shingle_hashes(data, offsets, d.ngram, d.hash))
            sets = _binary_column(values.astype("<u4").view(np.uint8), 4 * sizes,
                                  np.ones(len(sizes), dtype=bool))
            yield pa.RecordBatch.from_arrays([batch.column("id"), sets], schema=schema)

    return run


def _jaccard(mode: str, num_perm: int, keep: tuple[str, ...], schema: pa.Schema):
    """mapInArrow function: rows with binary columns ``a``/``b`` → ``keep`` + ``jaccard``.

    mode ``exact``: a and b are sorted shingle-hash sets; ``signature``: MinHash signatures.
    """
    import pyarrow as pa

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if mode == "exact":
                (a, a_counts), (b, b_counts) = (_uint32_rows(batch.column("a")),
                                                _uint32_rows(batch.column("b")))
                j = set_jaccards(a, a_counts, b, b_counts)
            else:
                j = estimated_jaccard(_uint32_rows(batch.column("a"))[0].reshape(-1, num_perm),
                                      _uint32_rows(batch.column("b"))[0].reshape(-1, num_perm))
            arrays = [batch.column(name) for name in keep] + [pa.array(j, pa.float64())]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return run


def _exact_in_one_task(schema: pa.Schema):
    """mapInArrow function for one task: rows that are either a file's shingle set (``id``,
    ``shingle_set``) or a pair to verify (``src``, ``dst``) → ``src``, ``dst``, ``jaccard``,
    the exact Jaccard of every pair. Each set is shipped and held once, however many pairs it is
    in (``udfs.minhash.indexed_set_jaccards``)."""
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
        values, sizes = _uint32_rows(sets.column("shingle_set"))
        a = pc.index_in(pairs.column("src"), value_set=sets.column("id"))
        b = pc.index_in(pairs.column("dst"), value_set=sets.column("id"))
        if a.null_count or b.null_count:  # every end was read from the files: a broken input
            raise RuntimeError(f"{a.null_count + b.null_count} pair ends have no shingle set")
        a, b = a.to_numpy(), b.to_numpy()
        jaccard = indexed_set_jaccards(values, sizes, a, b)
        yield pa.RecordBatch.from_arrays(
            [pairs.column("src").combine_chunks(), pairs.column("dst").combine_chunks(),
             pa.array(jaccard, pa.float64())], schema=schema)

    return run


# The representative rule (``rank_order``) as Arrow sort keys: every key but ``_license_rank`` and
# ``id`` (never null) puts nulls last in Spark, and so does Arrow's sort (its default placement);
# strings compare as UTF-8 bytes in both, and alpha_fraction is a fraction (never NaN). A test
# checks the two orders pick the same representatives.
_RANK_SORT_KEYS = [("_license_rank", "ascending"), ("stars", "descending"),
                   ("alpha_fraction", "descending"), ("max_line_length", "ascending"),
                   ("path", "ascending"), ("repo", "ascending"), ("id", "ascending")]
MEMBERS_SCHEMA = "id string, cluster_id string, representative string, jaccard double"


def _members_task(num_perm: int, schema: pa.Schema):
    """mapInArrow function for one task: rows that are either an edge (``src``, ``dst``) or a
    file (``id``, ``signature``, the rank columns) → ``MEMBERS_SCHEMA``: every file of an edge,
    its component (the smallest id, ``udfs.components``), the component's first file by rank and
    the signatures' estimate of the file's Jaccard similarity to it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from udfs.components import smallest_node_labels

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = [b for b in batches if b.num_rows]
        if not batches:  # no signed file (every file an exact duplicate, or without tokens)
            return
        table = pa.Table.from_batches(batches)
        is_edge = pc.is_valid(table.column("src"))
        edges, files = table.filter(is_edge), table.filter(pc.invert(is_edge))
        edges = edges.filter(pc.not_equal(edges.column("src"), edges.column("dst")))
        if edges.num_rows == 0:
            return
        nodes, components = smallest_node_labels(edges.column("src"), edges.column("dst"))
        at = pc.index_in(nodes, value_set=files.column("id"))
        if at.null_count:  # every edge joins two signed files: a broken input
            raise RuntimeError(f"{at.null_count} edge ends have no signature")
        members = files.take(at).append_column("cluster_id", components)
        members = members.take(pc.sort_indices(
            members, [("cluster_id", "ascending"), *_RANK_SORT_KEYS]))
        cluster = members.column("cluster_id").combine_chunks()
        starts = np.ones(len(cluster), dtype=bool)  # the first row of each cluster: its rep
        starts[1:] = pc.not_equal(cluster[1:], cluster[:-1]).to_numpy(zero_copy_only=False)
        rep = np.maximum.accumulate(np.where(starts, np.arange(len(cluster)), 0))
        sigs = _uint32_rows(members.column("signature"))[0].reshape(-1, num_perm)
        ids = members.column("id").combine_chunks()
        yield pa.RecordBatch.from_arrays(
            [ids, cluster, ids.take(pa.array(rep)),
             pa.array(estimated_jaccard(sigs, sigs[rep]), pa.float64())], schema=schema)

    return run


# ---------------------------------------------------------------------------------------------
# The stage


def rank_order() -> list[Column]:
    """The representative rule as a window ordering (module docstring)."""
    from pyspark.sql import functions as F

    return [F.col("_license_rank").asc(), F.col("stars").desc_nulls_last(),
            F.col("alpha_fraction").desc_nulls_last(), F.col("max_line_length").asc_nulls_last(),
            F.col("path").asc_nulls_last(), F.col("repo").asc_nulls_last(), F.col("id").asc()]


def license_rank(col: str = "license") -> Column:
    """``udfs.licenses.permissiveness_rank`` as a Spark expression (no Python UDF)."""
    from itertools import chain

    from pyspark.sql import functions as F

    ranks = {spdx: permissiveness_rank(spdx) for group in PERMISSIVENESS for spdx in group}
    table = F.create_map(*chain.from_iterable((F.lit(k), F.lit(v)) for k, v in ranks.items()))
    return (F.when(F.col(col).isNull(), F.lit(permissiveness_rank(None)))
            .otherwise(F.coalesce(table[F.col(col)], F.lit(len(PERMISSIVENESS)))))


def _with_jaccard(df: DataFrame, d: DedupSettings, mode: str, keep: tuple[str, ...],
                  types: str) -> DataFrame:
    schema = f"{types}, jaccard double"
    return map_in_arrow(df.select(*keep, "a", "b"),
                        _jaccard(mode, d.num_perm, keep, arrow_schema(schema)), schema)


def _pairs(edges: DataFrame, side: DataFrame, value: str) -> DataFrame:
    """Edges (src, dst) with the ``value`` column of src as ``a`` and of dst as ``b``."""
    from pyspark.sql import functions as F

    return (edges.join(side.select(F.col("id").alias("src"), F.col(value).alias("a")), "src")
            .join(side.select(F.col("id").alias("dst"), F.col(value).alias("b")), "dst"))


def _scored_in_one_task(reps: DataFrame, d: DedupSettings) -> DataFrame:
    """(src, dst, jaccard) of every LSH candidate pair, computed by one executor task:
    ``udfs.minhash.candidate_pairs`` over all the signatures at once, then their estimates.

    The same pairs as the distributed banding in ``near_duplicates`` (the same bucket rule on the
    same id order), without its band explode, grouping, distinct and the two joins that fetch
    both signatures of every pair: about five Spark jobs and shuffles of the 64-hex ids, 4.2–5.5 s
    for the 24,051 files of the make-run corpus against 0.4–0.5 s here (bench/RESULTS.md).
    """
    bands, rows = d.banding()
    all_pairs = d.all_pairs_bucket if d.verify != "none" else 1  # 1: every bucket is a star
    schema = arrow_schema("src string, dst string, jaccard double")
    in_schema = arrow_schema("id string, signature binary")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.minhash import candidate_pairs, pair_estimates

        table = pa.Table.from_batches([b for b in batches if b.num_rows],
                                      schema=in_schema)
        table = table.take(pc.sort_indices(table, [("id", "ascending")]))  # Spark's byte order
        ids = table.column("id").combine_chunks()
        sigs = _uint32_rows(table.column("signature"))[0].reshape(len(ids), d.num_perm)
        src, dst = candidate_pairs(sigs, bands, rows, all_pairs)
        jaccard = pair_estimates(sigs, src, dst)
        for lo in range(0, len(src), 1 << 16):
            hi = lo + (1 << 16)
            yield pa.RecordBatch.from_arrays(
                [ids.take(pa.array(src[lo:hi])), ids.take(pa.array(dst[lo:hi])),
                 pa.array(jaccard[lo:hi], pa.float64())], schema=schema)

    return map_in_arrow(reps.select("id", "signature").repartition(1), run,
                        "src string, dst string, jaccard double")


def _candidates_distributed(reps: DataFrame, d: DedupSettings) -> DataFrame:
    """(src, dst) of every LSH candidate pair, with the DataFrame API: band keys exploded and
    grouped across the cluster."""
    from pyspark.sql import functions as F

    bands, rows = d.banding()
    width = 4 * rows
    # Band i's key is bytes [i·width, (i+1)·width) of the signature (udfs.minhash.band_keys); the
    # buckets group by its 64-bit xxhash with i, which grouped 2.5x faster than the binary key
    # (measured: bench/RESULTS.md). Two different keys sharing a hash (about n²/2^65 pairs for n
    # keys) only propose one more candidate edge, which verification then drops.
    keys = F.array(*[F.xxhash64(F.lit(i), F.substring("signature", i * width + 1, width))
                     for i in range(bands)])
    buckets = (reps.select("id", F.explode(keys).alias("key"))
               .groupBy("key").agg(F.sort_array(F.collect_list("id")).alias("ids"))
               .where(F.size("ids") > 1))
    n = "size(ids)"
    star = f"transform(slice(ids, 2, {n} - 1), y -> named_struct('src', y, 'dst', ids[0]))"
    if d.verify != "none":
        # every pair of a small bucket: verification must not cut a file loose only because it
        # is not similar enough to the bucket's smallest id (measured: bench/RESULTS.md)
        every_pair = (f"flatten(transform(sequence(1, {n} - 1), i -> transform("
                      f"slice(ids, i + 1, {n} - i), y -> named_struct('src', y, 'dst', ids[i - 1]))))")
        star = f"IF({n} <= {d.all_pairs_bucket}, {every_pair}, {star})"
    return buckets.select(F.explode(F.expr(star)).alias("e")).select("e.src", "e.dst").distinct()


def estimated_edges(edges: DataFrame, reps: DataFrame, d: DedupSettings) -> DataFrame:
    """Edges (src, dst) with the signatures' estimate of their Jaccard similarity as ``jaccard``;
    ``reps`` holds every end's ``id`` and ``signature``."""
    return _with_jaccard(_pairs(edges, reps, "signature"), d, "signature", ("src", "dst"),
                         "src string, dst string")


def verified_edges(scored: DataFrame, files: DataFrame, d: DedupSettings,
                   one_task: bool = False, tasks: list[list[str]] | None = None) -> DataFrame:
    """The candidate edges (src, dst) whose Jaccard similarity is ≥ ``d.threshold``.

    ``scored``: every candidate edge with the signatures' estimate as ``jaccard``. With
    ``verify: exact``, an estimate within ``verify_margin`` of the threshold is replaced by the
    exact Jaccard of the two files' shingle sets, computed from the text of just those files (a
    second, filtered read of ``files``); estimates farther away decide alone. The estimate's
    standard deviation is √(J(1−J)/num_perm), 0.029 at J = 0.7 with 256 permutations, so the
    default margin of 0.15 is more than 5σ: a pair on the wrong side of it is a one-in-ten-million
    event. Carrying every file's shingle set instead (4 bytes per distinct shingle, about half the
    text) cost more than the MinHash itself (bench/RESULTS.md). ``one_task``: the pairs and the
    sets they need go to one task, which holds each set once; otherwise both sets are joined to
    every pair across the cluster. ``tasks``: ``files``' own Parquet files in tasks
    (``jobs.direct_io.parquet_tasks``); then, for up to ``d.broadcast_rows`` files, the tasks
    read the text themselves and keep those files' rows (``_shingle_sets``).
    """
    from pyspark.sql import functions as F

    if d.verify == "signature" or d.verify_margin == 0:
        return scored.where(F.col("jaccard") >= d.threshold).select("src", "dst")
    scored = scored.localCheckpoint(eager=True)
    low, high = d.threshold - d.verify_margin, d.threshold + d.verify_margin
    sure = scored.where(F.col("jaccard") >= high).select("src", "dst")
    unsure = scored.where((F.col("jaccard") > low) & (F.col("jaccard") < high))
    ids = (unsure.select(F.col("src").alias("id")).union(unsure.select(F.col("dst").alias("id")))
           .distinct())
    schema = "id string, shingle_set binary"
    sets = None
    if tasks is not None:
        few = [r["id"] for r in ids.limit(d.broadcast_rows + 1).collect()]
        if not few:
            return sure
        if len(few) <= d.broadcast_rows:
            sets = map_parquet_in_arrow(files.sparkSession, tasks,
                                        files.select("id", "text").schema,
                                        _shingle_sets(d, arrow_schema(schema), few), schema)
    if sets is None:
        ids = ids.localCheckpoint(eager=True)
        count = ids.count()
        if count == 0:
            return sure
        wanted = F.broadcast(ids) if count <= d.broadcast_rows else ids  # else the text is shuffled
        sets = map_in_arrow(files.join(wanted, "id", "left_semi").select("id", "text"),
                            _shingle_sets(d, arrow_schema(schema)), schema)
    if one_task:
        none = F.lit(None).cast("string")
        tagged = sets.select("id", "shingle_set", none.alias("src"), none.alias("dst")).unionByName(
            unsure.select(none.alias("id"), F.lit(None).cast("binary").alias("shingle_set"),
                          "src", "dst"))
        out = "src string, dst string, jaccard double"
        exact = map_in_arrow(tagged.repartition(1), _exact_in_one_task(arrow_schema(out)), out)
    else:
        sets = sets.dropDuplicates(["id"])  # one id ingested twice has one text (the id hashes it)
        exact = _with_jaccard(_pairs(unsure.select("src", "dst"), sets, "shingle_set"), d,
                              "exact", ("src", "dst"), "src string, dst string")
    return sure.unionByName(exact.where(F.col("jaccard") >= d.threshold).select("src", "dst"))


def _members_in_one_task(edges: DataFrame, reps: DataFrame, d: DedupSettings) -> DataFrame:
    """``near_duplicates``' members from one task (``_members_task``): the edges and every
    signed file go to it. For the inputs whose candidate pairs already came from one task: the
    distributed way (components, the join back to the files, a window per cluster and the
    representative's signature joined to every member) ran about ten Spark jobs of fixed cost
    (1.8-2.4 s at 1x the bench corpus, measured)."""
    from pyspark.sql import functions as F

    columns = ["id", "signature", "_license_rank", *RANK_COLUMNS[1:]]
    files = reps.select(*columns, F.lit(None).cast("string").alias("src"),
                        F.lit(None).cast("string").alias("dst"))
    edges = edges.select(*[F.lit(None).cast(files.schema[c].dataType).alias(c) for c in columns],
                         "src", "dst")
    return map_in_arrow(files.unionByName(edges).repartition(1),
                        _members_task(d.num_perm, arrow_schema(MEMBERS_SCHEMA)), MEMBERS_SCHEMA)


def near_duplicates(reps: DataFrame, files: DataFrame, d: DedupSettings,
                    tasks: list[list[str]] | None = None) -> tuple[DataFrame, int]:
    """(id, cluster_id, representative, jaccard) of every file in a near-duplicate cluster;
    ``jaccard`` is the signatures' estimate of the file's similarity to the representative.

    ``reps``: the exact-duplicate survivors with a signature and the rank columns; ``files``: the
    stage's input with the text (read again only for exact verification near the threshold;
    ``tasks``: its own Parquet files, ``verified_edges``).
    Up to ``d.one_task_files`` signatures, the candidate pairs come from one executor task, else
    from the distributed banding; both give the same pairs. The members then come from one task
    too (``_members_in_one_task``) or from ``_members_distributed``; both give the same rows.
    Returns the members and the number of connected-components rounds (0 in one task).
    """

    one_task = d.one_task_files > 0 and reps.count() <= d.one_task_files
    if one_task:  # the estimates come with the pairs
        scored = _scored_in_one_task(reps, d)
        edges = scored.select("src", "dst")
    else:
        edges = _candidates_distributed(reps, d)
        scored = None
    if d.verify != "none":
        if scored is None:
            scored = estimated_edges(edges, reps, d)
        edges = verified_edges(scored, files, d, one_task, tasks)
    if one_task:  # the components and their representatives in one task as well
        return _members_in_one_task(edges, reps, d), 0
    return _members_distributed(edges, reps, d)


def _members_distributed(edges: DataFrame, reps: DataFrame,
                         d: DedupSettings) -> tuple[DataFrame, int]:
    """``near_duplicates``' members with the DataFrame API: ``jobs.components``, then each
    cluster's first file by ``rank_order`` and the signatures' estimate of every member's
    similarity to it. Returns the members and the components' rounds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    components = connected_components(edges, d.max_rounds, d.one_task_edges)
    members = components.labels.join(reps, components.labels["node"] == reps["id"]).select(
        "id", F.col("component").alias("cluster_id"), F.col("signature").alias("a"),
        "_license_rank", *RANK_COLUMNS[1:])
    by_cluster = Window.partitionBy("cluster_id").orderBy(*rank_order())
    members = members.withColumn("representative", F.first("id").over(by_cluster))
    rep_side = members.where(F.col("id") == F.col("representative")).select(
        "cluster_id", F.col("a").alias("b"))
    pairs = members.join(rep_side, "cluster_id")
    return (_with_jaccard(pairs, d, "signature", ("id", "cluster_id", "representative"),
                          "id string, cluster_id string, representative string"),
            components.rounds)


RANK_COLUMNS = ("license", "stars", "alpha_fraction", "max_line_length", "path", "repo")


def _decisions(spark: SparkSession, cfg: PipelineConfig,
               files: DataFrame) -> tuple[DataFrame, DataFrame, list[list[str]] | None]:
    """One row per distinct file id (content_hash, _outcome, _reason, detail, _copies), the
    clusters for silver.dup_clusters, and silver.files' Parquet files in tasks when the Python
    tasks read them themselves (else None).

    Computed on narrow rows (id, hashes, signature, rank columns): the text is read once, by the
    signing pass, and never shuffled. With ``dedup.direct_reads`` and a table that allows it
    (``jobs.direct_io.local_parquet_files``), the signing tasks read silver.files' Parquet files
    themselves (pyarrow) instead of taking Spark's scan of them as Arrow batches. Copies of one
    id (the same repo, path and content ingested twice) are ranked among themselves first;
    ``_copies`` tells the join back how many there were.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    d = cfg.dedup
    group = F.coalesce("content_hash", F.concat(F.lit("error:"), "id"))
    # Copies of one id have one text (the id hashes it), so one content hash: after one shuffle by
    # the hash both windows below find their rows in place (a window by id alone shuffled again).
    files_in_tasks = local_parquet_files(files) if d.direct_reads else None
    tasks = parquet_tasks(spark, files_in_tasks) if files_in_tasks else None
    sign = _sign(d, arrow_schema(SIGNED_SCHEMA))
    signed = (map_parquet_in_arrow(spark, tasks, files.schema, sign, SIGNED_SCHEMA) if tasks
              else map_in_arrow(files, sign, SIGNED_SCHEMA))
    signed = signed.withColumn("_group", group).repartition("_group")
    same_id = Window.partitionBy("_group", "id")
    narrow = (signed.withColumn("_license_rank", license_rank())
              .withColumn("_copies", F.count(F.lit(1)).over(same_id))
              .withColumn("_copy", F.row_number().over(same_id.orderBy(*rank_order())))
              .where(F.col("_copy") == 1))
    exact = Window.partitionBy("_group").orderBy(*rank_order())
    ranked = (narrow.withColumn("_exact_rn", F.row_number().over(exact))
              .withColumn("_exact_rep", F.first("id").over(exact))
              .withColumn("_exact_size", F.sum("_copies").over(Window.partitionBy("_group")))
              .localCheckpoint(eager=True))  # signed once; later passes reuse it
    survivors = ranked.where((F.col("_exact_rn") == 1) & F.col("_error").isNull())
    if d.near:
        reps = survivors.where(F.col("signature").isNotNull()).select(
            "id", "signature", "_license_rank", *RANK_COLUMNS[1:])
        near, _rounds = near_duplicates(reps, files, d, tasks)
        near = near.localCheckpoint(eager=True)
    else:
        near = local_frame(spark, [], MEMBERS_SCHEMA)

    quarantined = F.col("_error").isNotNull()
    exact_dup = F.col("_exact_rn") > 1
    near_dup = F.col("representative").isNotNull() & (F.col("representative") != F.col("id"))
    decisions = ranked.join(near, "id", "left").select(
        "id", "content_hash", "_copies",
        F.when(quarantined, QUARANTINED).when(exact_dup | near_dup, DROPPED).otherwise(KEPT)
        .alias("_outcome"),
        F.when(quarantined, F.col("_error")).when(exact_dup, "exact_duplicate")
        .when(near_dup, "near_duplicate").alias("_reason"),
        F.when(exact_dup, F.to_json(F.struct(
            F.lit("exact").alias("kind"), F.col("content_hash").alias("cluster_id"),
            F.col("_exact_rep").alias("representative"))))
        .when(near_dup, F.to_json(F.struct(
            F.lit("near").alias("kind"), "cluster_id", "representative",
            F.round("jaccard", 4).alias("jaccard"))))
        .alias("detail"),
    )
    exact_clusters = (
        ranked.where((F.col("_exact_size") > 1) & F.col("_error").isNull())
        .groupBy(F.col("content_hash").alias("cluster_id"))
        .agg(F.min("_exact_rep").alias("representative"),
             F.sort_array(F.flatten(F.collect_list(F.array_repeat("id", F.col("_copies").cast(
                 "int"))))).alias("members"),  # an id ingested twice is listed twice
             F.sum("_copies").alias("size"))
        .select(F.lit("exact").alias("kind"), "cluster_id", "representative", "members", "size",
                F.lit(1.0).alias("max_jaccard"), F.lit(1.0).alias("min_jaccard")))
    others = F.when(F.col("id") != F.col("representative"), F.col("jaccard"))
    near_clusters = (
        near.groupBy("cluster_id")
        .agg(F.min("representative").alias("representative"),
             F.sort_array(F.collect_list("id")).alias("members"),
             F.count(F.lit(1)).alias("size"),
             F.max(others).alias("max_jaccard"), F.min(others).alias("min_jaccard"))
        .select(F.lit("near").alias("kind"), "cluster_id", "representative", "members", "size",
                "max_jaccard", "min_jaccard"))
    return (decisions.localCheckpoint(eager=True), exact_clusters.unionByName(near_clusters),
            tasks)


def _write_unique_files(decisions: DataFrame, tasks: list[list[str]], files_schema,
                        lake: Lakehouse, table: str, kept: DataFrame) -> int:
    """Write silver.unique_files from the Python tasks (``dedup.direct_writes``): each task reads
    its share of silver.files' Parquet files (the ones the signing pass read), keeps the rows of
    the kept ids with their content hash (broadcast: one row per kept id), and writes them as
    Parquet into the table's directory (``jobs.direct_io.parquet_file_writer``); the driver
    commits those files as the table's new version (``Lakehouse.overwrite_files``), after
    checking that they hold one row per kept id. ``kept`` is the same rows as Spark would write
    them: used instead when the table does not allow it (``Lakehouse.local_table``: a table not
    created yet, another schema, a table feature).

    Why: Spark's write decoded the text into rows and encoded it again (1.6 s of the warm 1x
    bench run, on both cores), after Delta's preparation of the overwrite (three jobs that
    rebuild the table's state, and a file listing). pyarrow reads and writes the same Parquet in
    about a third of the CPU time, and delta-rs commits from the log on the driver
    (bench/RESULTS.md, session 17).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    target = lake.local_table(table, kept.schema)
    if target is None:
        return lake.write(table, kept)
    directory, stats_columns = target
    spark = kept.sparkSession
    keep = decisions.where(F.col("_outcome") == KEPT).select("id", "content_hash").toArrow()
    shared = spark.sparkContext.broadcast(keep)
    schema = to_arrow_schema(kept.schema)

    def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
        kept_ids = shared.value
        found = pc.index_in(batch.column("id"), value_set=kept_ids.column("id"))
        rows = pc.indices_nonzero(found.is_valid())
        hashes = kept_ids.column("content_hash").take(found.take(rows))
        picked = batch.take(rows)
        return pa.RecordBatch.from_arrays(
            [hashes.combine_chunks() if f.name == "content_hash" else picked.column(f.name)
             for f in schema], schema=schema)

    try:
        written = map_parquet_in_arrow(
            spark, tasks, files_schema,
            parquet_file_writer(directory, schema, stats_columns, transform),
            WRITTEN_SCHEMA).collect()
        return lake.overwrite_files(table, [r.asDict() for r in written], keep.num_rows)
    finally:
        shared.destroy()


def build(spark: SparkSession, cfg: PipelineConfig, inputs: dict[str, DataFrame]) -> StageResult:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    files = inputs["silver.files"].select(*INPUT_COLUMNS)
    decisions, clusters, tasks = _decisions(spark, cfg, files)
    # Join the decisions back to the full rows. Extra copies of one id (rare) are told apart by
    # the rank, in a window over just those rows; the first copy takes the id's decision. Without
    # such ids (the usual case) that branch is left out: it scanned the files once more per write.
    # Every file's id is in the decisions. Broadcasting them (when few enough) reads the text
    # once per write and never shuffles it; a shuffle join moves every file's text.
    with_copies = F.col("_copies") > 1
    ids, copied = decisions.agg(F.count(F.lit(1)), F.count(F.when(with_copies, 1))).first()
    any_copies = copied > 0
    if ids <= cfg.dedup.broadcast_rows:
        single = files.join(F.broadcast(decisions.where(~with_copies)), "id")
        copies = files.join(F.broadcast(decisions.where(with_copies)), "id")
    else:
        joined = files.join(decisions, "id")
        single, copies = joined.where(~with_copies), joined.where(with_copies)
    decided = single
    if any_copies:
        copies = copies.withColumn(
            "_copy", F.row_number().over(Window.partitionBy("id").orderBy(
                license_rank().asc(), *rank_order()[1:])))
        extra = F.col("_copy") > 1
        copies = copies.select(
            *[c for c in single.columns if c not in ("_outcome", "_reason", "detail")],
            F.when(extra, F.lit(DROPPED)).otherwise(F.col("_outcome")).alias("_outcome"),
            F.when(extra, F.lit("exact_duplicate")).otherwise(F.col("_reason")).alias("_reason"),
            F.when(extra, F.to_json(F.struct(
                F.lit("exact").alias("kind"), F.col("content_hash").alias("cluster_id"),
                F.col("id").alias("representative")))).otherwise(F.col("detail")).alias("detail"))
        decided = single.unionByName(copies)
    quarantined = F.col("_outcome") == QUARANTINED
    decided = decided.select(
        *INPUT_COLUMNS, "content_hash", "_outcome", "_reason", "detail",
        F.when(quarantined, F.lit("silver.files")).alias("source_kind"),
        F.when(quarantined, F.concat_ws("/", "repo", "path")).alias("source"),
        F.when(quarantined, F.substring("text", 1, cfg.ingest.quarantine_payload_chars))
        .alias("payload"),
        F.col("size_bytes").alias("_bytes"))
    writers = {}
    if cfg.dedup.direct_writes:
        # the small tables too: Spark's Delta overwrite has a fixed cost that the output's write
        # tasks made wait (``Lakehouse.write_by_tasks``); the rejects carry no text by default
        writers["silver.dup_clusters"] = Lakehouse.write_by_tasks
        if not cfg.dedup.rejects_text:
            writers["silver.rejects"] = partial(Lakehouse.write_by_tasks,
                                                slice_=("stage", STAGE_NAME))
        if tasks and not any_copies and ids <= cfg.dedup.broadcast_rows:
            writers["silver.unique_files"] = partial(_write_unique_files, decisions, tasks,
                                                     files.schema)
    return StageResult(
        input_rows=files.select(F.col("size_bytes").alias("_bytes")),
        decided=decided,
        kept_columns=INPUT_COLUMNS + ("content_hash",),
        extra_outputs={"silver.dup_clusters": clusters},
        rejects_omit=() if cfg.dedup.rejects_text else ("text",),
        writers=writers,
    )


STAGE = Stage(
    name=STAGE_NAME, inputs=("silver.files",), output="silver.unique_files", build=build,
    description="exact content-hash and MinHash-LSH near-duplicate removal",
)

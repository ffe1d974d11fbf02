"""Step 1, sign: every file's content hash (over the normalized text) and MinHash signature, in
one pass over the text (``udfs.minhash`` states the normalization, tokens, shingles, hash and
permutations; signatures equal datasketch's). The text is read here once and never shuffled:
every later step works on the narrow signed rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobs.arrow import arrow_schema
from jobs.dedup.arrays import binary_column, buffers
from jobs.direct_io import map_parquet_in_arrow
from jobs.pyworker import map_in_arrow
from jobs.schemas import FILE_COLUMNS, SIGNAL_COLUMNS, SIGNALS
from udfs.minhash import MinHasher, content_hashes, shingle_hashes

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from jobs.config import DedupSettings

INPUT_COLUMNS = FILE_COLUMNS + SIGNAL_COLUMNS
SIGNED_SCHEMA = (
    "id string, repo string, path string, language string, license string, stars long, "
    f"size_bytes long, {SIGNALS}, content_hash string, signature binary, shingles long, "
    "_error string"
)


def sign_batches(d: DedupSettings, schema: pa.Schema):
    """mapInArrow function: files → the same rows without their text, plus content_hash, signature
    (binary, little-endian uint32s; null without a token), shingles and _error (a file whose
    hashing raised: the stage quarantines it, the others of its batch are signed)."""
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
                data, offsets = buffers(texts)
                hashes = content_hashes(data, offsets)
                sigs, counts = signatures(data, offsets, hasher)
            except Exception:  # noqa: BLE001 - find the file that raised, one at a time
                hashes = [None] * n
                sigs = np.zeros((n, d.num_perm), dtype=np.uint32)
                counts = np.zeros(n, dtype=np.int64)
                for i in range(n):
                    one = buffers(texts.slice(i, 1))
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
            signature = binary_column(
                np.ascontiguousarray(sigs[ok], dtype="<u4").view(np.uint8).ravel(),
                np.full(n, 4 * d.num_perm), ok)
            columns = {name: batch.column(name) for name in batch.schema.names}
            columns.update(content_hash=pa.array(hashes, pa.string()), signature=signature,
                           shingles=pa.array(counts, pa.int64()),
                           _error=pa.array(errors, pa.string()))
            yield pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)

    return run


def sign(spark: SparkSession, files: DataFrame, d: DedupSettings,
         tasks: list[list[str]] | None) -> DataFrame:
    """``SIGNED_SCHEMA`` rows of ``files``. ``tasks``: ``files``' own Parquet files dealt into
    tasks (``dedup.tuning.direct_reads``), read by the Python tasks with pyarrow; None: Spark's
    scan hands them the rows."""
    fn = sign_batches(d, arrow_schema(SIGNED_SCHEMA))
    if tasks:
        return map_parquet_in_arrow(spark, tasks, files.schema, fn, SIGNED_SCHEMA)
    return map_in_arrow(files, fn, SIGNED_SCHEMA)

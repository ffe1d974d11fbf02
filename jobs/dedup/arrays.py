"""Arrow columns as numpy buffers and back, without a Python object per row: how the dedup steps
hand text, signatures and shingle sets to the compiled kernels in ``udfs.minhash``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


def buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
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


def uint32_rows(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A binary column whose rows are runs of little-endian uint32s (signatures, shingle sets):
    all its values concatenated (zero-copy) and the count per row."""
    import numpy as np

    data, offsets = buffers(column)
    return data[offsets[0]:offsets[-1]].view("<u4"), np.diff(offsets) // 4


def signatures(column: pa.Array, num_perm: int) -> np.ndarray:
    """A column of signatures (``num_perm`` little-endian uint32s each) as a (rows, num_perm)
    matrix, zero-copy."""
    return uint32_rows(column)[0].reshape(-1, num_perm)


def binary_column(data: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A binary column built from its buffers: row i is the next ``lengths[i]`` bytes of ``data``
    where ``valid[i]``, else null (its bytes must not be in ``data``)."""
    import numpy as np
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(np.where(valid, lengths, 0), out=offsets[1:])
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(lengths), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=int(len(valid) - valid.sum()))


def uint32_column(values: np.ndarray, counts: np.ndarray) -> pa.Array:
    """Rows of ``counts[i]`` uint32s each, from their concatenation, as a binary column."""
    import numpy as np

    return binary_column(np.ascontiguousarray(values, dtype="<u4").view(np.uint8).ravel(),
                         4 * np.asarray(counts), np.ones(len(counts), dtype=bool))

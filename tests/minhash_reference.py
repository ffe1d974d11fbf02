"""Plain-Python statements of udfs.minhash's definitions, one document at a time: what the tests
compare the compiled batch kernels against (and nothing in the pipeline calls).

Each follows the definition in udfs.minhash's docstring directly (``str.rstrip``, ``set``
operations, ``bytes`` slices), so a kernel that drifts from its definition fails a test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def normalize_for_exact(text: str) -> str:
    """The text exact deduplication hashes: ``\\n`` line ends, lines right-stripped, trailing
    blank lines removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n")


def content_hash(text: str) -> str:
    """SHA-256 hex of ``normalize_for_exact(text)``."""
    return hashlib.sha256(normalize_for_exact(text).encode("utf-8", "surrogatepass")).hexdigest()


def encode_docs(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts concatenated and the ``len + 1`` offsets of each: the layout of
    an Arrow string column's buffers, which the kernels take."""
    blobs = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def exact_jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B| of two shingle sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def set_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two arrays of distinct shingle hashes (1.0 if both empty)."""
    return exact_jaccard(set(a.tolist()), set(b.tolist()))


def shingle_sets(hashes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Each document's distinct shingle hashes, sorted: ``sorted(set(...))`` per document."""
    bounds = np.r_[0, np.cumsum(counts)].astype(np.int64)
    return [np.array(sorted(set(hashes[bounds[i]:bounds[i + 1]].tolist())), dtype=np.uint32)
            for i in range(len(counts))]


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """The ``bands`` keys of one signature: each band's ``rows`` values as little-endian bytes."""
    sig = np.ascontiguousarray(signature[:bands * rows], dtype="<u4")
    return [sig[i * rows:(i + 1) * rows].tobytes() for i in range(bands)]

"""Content hashing, shingling, MinHash signatures and LSH banding for near-duplicate detection.

Everything here is plain Python and numpy; ``jobs.dedup`` calls it per Arrow batch on executors.

Definitions (stated once, used by the stage, the tests and the benchmarks alike):

- **Exact-duplicate normalization**: line endings become ``\\n``,
  trailing whitespace (``str.rstrip``) is removed from every line, and trailing blank lines at
  the end of the file are removed. The content hash is the SHA-256 of the normalized text in UTF-8;
  ``content_hashes`` computes it for a whole batch (normalization in one compiled pass).
- **Tokens** (``tokenize``): maximal runs of ASCII letters, digits, ``_`` and non-ASCII
  characters, i.e. identifiers, keywords and numbers; ASCII operators, punctuation and whitespace
  separate tokens and are dropped. This follows BigCode's near-deduplication of The Stack
  (Kocetkov et al., 2022; Allal et al., 2023, "SantaCoder"), which splits code on non-alphanumeric
  characters. Counting every non-ASCII character as a word character makes the rule a property of
  single UTF-8 bytes (every byte of a non-ASCII character is ≥ 0x80), so the batch path finds tokens
  with one table lookup per byte.
- **Shingles**: word n-grams of ``ngram`` consecutive tokens (default 5). **Short documents**,
  with fewer than ``ngram`` tokens but at least one, get exactly one shingle: their whole token
  sequence. So two short documents collide only when their token sequences are identical, instead of
  every short document receiving the empty-set signature and falling into one giant cluster (a bug
  peers have had). Documents without a single token get no signature and take part in exact
  deduplication only.
- **Shingle hash** (32 bits), one of:
  ``sha1``: the first 4 bytes, little-endian, of SHA-1 over the shingle's tokens joined by one space
  (datasketch's default ``sha1_hash32``); ``poly`` (default): a token's hash is the MurmurHash3
  64-bit finalizer of ``Σ c_j·Q^j mod 2^64`` over its UTF-8 bytes ``c_j`` (``Q`` = the 64-bit FNV
  prime), a shingle's hash is the low 32 bits of ``Σ t_k·P^(n-1-k) mod 2^64`` over its n token
  hashes (``P = 0x9E3779B97F4A7C15``). ``poly`` is hand-written because every token and shingle
  hash of a batch comes out of one compiled pass (numba) over the batch's UTF-8 buffer, with no
  Python object per token, where tokenizing with ``re`` and one SHA-1 call per shingle is
  tens of times slower (bench/RESULTS.md, "Dedup speed"). ``shingle_hash``
  gives the same value for one shingle's bytes, so datasketch takes it as its ``hashfunc``.
- **Permutations**: datasketch ≥ 2.0's ``affine32`` scheme, so signatures equal
  ``datasketch.MinHash(num_perm, seed, hashfunc)`` exactly: the 32-bit hash is pre-mixed with the
  MurmurHash3 finalizer, then ``a_k·h + b_k`` modulo 2^32 with odd ``a_k``; ``a`` and ``b`` are
  drawn from ``numpy.random.RandomState(seed)`` (``a = 2·randint(0, 2^31) + 1``, then
  ``b = randint(0, 2^32)``). We compute them rather than call datasketch per document because
  datasketch hashes and permutes one document at a time; here a whole Arrow batch is permuted by
  one compiled loop (``_min_permuted``).
- **Banding**: ``optimal_bands`` picks bands × rows minimizing the weighted integral of false
  positive and false negative probability of the S-curve ``1 − (1 − s^r)^b`` around the threshold
  (Leskovec, Rajaraman, Ullman, "Mining of Massive Datasets", ch. 3.4; the same objective as
  datasketch's ``MinHashLSH``). A band key is the band's ``rows`` values as little-endian bytes.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

HashName = Literal["poly", "sha1"]

_TOKEN = re.compile(r"[A-Za-z0-9_\u0080-\U0010FFFF]+")
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the token-hash polynomial (golden ratio)
_MAX32 = np.uint32(0xFFFFFFFF)


# Code points for which str.isspace() is true: what str.rstrip() strips (checked by a test).
_SPACE_CODES = np.array([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0,
                         0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
                        dtype=np.int64)


@numba.njit(cache=True)
def _space_before(data: np.ndarray, start: int, end: int, spaces: np.ndarray) -> int:
    """Length in bytes of the whitespace character that ends at ``end`` (0 if none)."""
    last = data[end - 1]
    if last < 0x80:
        for s in spaces:
            if s == last:
                return 1
        return 0
    lead = end - 1  # back over continuation bytes (10xxxxxx) to the lead byte, at most 3
    while lead > start and end - lead < 4 and data[lead] & 0xC0 == 0x80:
        lead -= 1
    width = end - lead
    first = data[lead]
    if width == 2 and first & 0xE0 == 0xC0:
        code = (np.int64(first & 0x1F) << 6) | (data[lead + 1] & 0x3F)
    elif width == 3 and first & 0xF0 == 0xE0:
        code = ((np.int64(first & 0x0F) << 12) | (np.int64(data[lead + 1] & 0x3F) << 6)
                | (data[lead + 2] & 0x3F))
    else:
        return 0  # no whitespace character is 1 or 4 bytes long above ASCII
    for s in spaces:
        if s == code:
            return width
    return 0


@numba.njit(cache=True)
def _normalized(data: np.ndarray, offsets: np.ndarray,
                spaces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every document normalized for exact deduplication, on UTF-8 bytes: (bytes, offsets).

    Bytes are copied as they are scanned; at each line end the copy's trailing whitespace is cut.
    """
    out = np.empty(offsets[-1] - offsets[0], dtype=np.uint8)  # never longer than the input
    out_offsets = np.zeros(len(offsets), dtype=np.int64)
    w = 0
    for doc in range(len(offsets) - 1):
        end = offsets[doc + 1]
        line = w  # where the current line starts in ``out``
        r = offsets[doc]
        while r <= end:
            c = data[r] if r < end else np.uint8(10)  # the text's end closes its last line
            if c == 10 or c == 13:
                while w > line:
                    width = _space_before(out, line, w, spaces)
                    if width == 0:
                        break
                    w -= width
                if r == end:
                    break
                out[w] = 10
                w += 1
                line = w
                if c == 13 and r + 1 < end and data[r + 1] == 10:
                    r += 1
            else:
                out[w] = c
                w += 1
            r += 1
        while w > out_offsets[doc] and out[w - 1] == 10:  # trailing blank lines
            w -= 1
        out_offsets[doc + 1] = w
    return out[:w], out_offsets


@numba.njit(cache=True)
def _normal_ends(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For every document that normalization would only cut at its end: where its normalized
    text ends in ``data`` (its trailing line ends dropped); -1 for the others.

    A document qualifies when it has no carriage return and no line (the last included) ends in a
    byte that could be whitespace: ASCII whitespace or any byte of a non-ASCII character (which
    might be one of the Unicode spaces; the full pass decides those). Why: nearly every file of a
    code corpus qualifies, and this scan writes nothing, so it costs a fraction of the copying
    pass it spares.
    """
    n = len(offsets) - 1
    ends = np.full(n, -1, dtype=np.int64)
    for doc in range(n):
        start, end = offsets[doc], offsets[doc + 1]
        while end > start and data[end - 1] == 10:
            end -= 1
        if end > start and _may_be_space(data[end - 1]):
            continue
        normal = True
        for r in range(start, end):
            c = data[r]
            if c <= 13:  # one comparison for nearly every byte
                if c == 13 or (c == 10 and r > start and _may_be_space(data[r - 1])):
                    normal = False
                    break
        if normal:
            ends[doc] = end
    return ends


@numba.njit(cache=True, inline="always")
def _may_be_space(c: np.uint8) -> bool:
    """Whether byte ``c`` (not a line feed) may belong to a character ``str.rstrip`` strips."""
    return c == 32 or c == 9 or c == 11 or c == 12 or c == 13 or (0x1C <= c <= 0x1F) or c >= 0x80


def content_hashes(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    """The content hash of every document in a UTF-8 buffer (an Arrow string column's layout): the
    documents that normalization leaves alone but for their trailing line ends are hashed in
    place (``_normal_ends``), the others normalized by one compiled pass each; one SHA-256 call
    per document. Hand-written instead of normalizing Python strings because making the strings
    and splitting their lines cost about as much as the whole MinHash.
    """
    if len(offsets) == 0 or offsets[0] < 0 or offsets[-1] > len(data) or np.any(
            np.diff(offsets) < 0):
        raise ValueError("offsets must ascend and stay inside the data")  # no bounds checks
    offsets = np.asarray(offsets, dtype=np.int64)
    ends = _normal_ends(data, offsets)
    view = memoryview(data)
    out = []
    for i, (start, end) in enumerate(zip(offsets.tolist(), ends.tolist())):
        if end >= 0:
            out.append(hashlib.sha256(view[start:end]).hexdigest())
        else:
            normal, _ = _normalized(data, offsets[i:i + 2], _SPACE_CODES)
            out.append(hashlib.sha256(normal).hexdigest())
    return out


def tokenize(text: str, lowercase: bool = False) -> list[str]:
    """Identifier/keyword/number tokens of code, in order."""
    return _TOKEN.findall(text.lower() if lowercase else text)


def shingles(tokens: Sequence[str], ngram: int) -> list[str]:
    """The document's shingles as strings (tokens joined by one space), in order, repeats kept.

    Short documents (0 < len < ngram) give one shingle of all their tokens; no tokens give none.
    """
    if not tokens:
        return []
    n = min(ngram, len(tokens))
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# ---------------------------------------------------------------------------------------------
# Tokens and shingle hashes

_WORD_BYTE = np.zeros(256, dtype=bool)
for _lo, _hi in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xFF)):
    _WORD_BYTE[_lo:_hi + 1] = True
_WORD_BYTE[ord("_")] = True
_Q = np.uint64(0x100000001B3)  # odd multiplier of the byte polynomial (the 64-bit FNV prime)


def sha1_hash32(data: bytes) -> int:
    """datasketch's default 32-bit hash: first 4 bytes of SHA-1, little-endian."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


@numba.njit(cache=True)
def _fmix64(h: np.uint64) -> np.uint64:
    """MurmurHash3's 64-bit finalizer (Appleby), a bijection with full avalanche."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@numba.njit(cache=True)
def _poly_shingles(data: np.ndarray, offsets: np.ndarray, ngram: int,
                   word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``poly`` shingle hashes of every document, in order, and the count per document.

    Compiled with numba: one pass over the bytes hashes the tokens, keeping the last ``ngram``
    token hashes in a ring and the shingle's sum rolling (subtract the oldest token's term,
    multiply by P, add the new one: the same value modulo 2^64 as the sum over the window, in
    O(1) per token instead of ngram multiply-adds and modulo ring indices). The output is sized by
    a bound (half the bytes, so up to twice the batch's size in memory) instead of by a first
    pass that counted the tokens, which read every byte twice. A numpy form of the same
    definition (prefix sums of the byte polynomial over chunks) makes several passes through
    memory and is several times slower.
    """
    docs = offsets.shape[0] - 1
    counts = np.zeros(docs, np.int64)
    # k tokens need at least 2k - 1 bytes, and a document has at most as many shingles as
    # tokens: (bytes + 1) // 2 bounds its shingles, so one pass fills ``out`` (no counting pass)
    bound = most = 0
    for d in range(docs):
        tokens = (offsets[d + 1] - offsets[d] + 1) // 2
        bound += tokens
        most = max(most, tokens)
    out = np.empty(bound, np.uint32)
    # the last ngram token hashes (fewer if no document can have ngram tokens: then it never
    # wraps); once full, ring[head] is the oldest
    size = max(1, min(ngram, most))
    ring = np.empty(size, np.uint64)
    oldest = np.uint64(1)  # P^(ngram-1): the oldest token's weight in the shingle's sum
    for _ in range(size - 1):
        oldest *= _P
    low = np.uint64(0xFFFFFFFF)
    pos = 0
    for d in range(docs):
        first = pos
        seen = 0
        head = 0
        acc = np.uint64(0)  # Σ t_k·P^(n-1-k) over the shingle's tokens, kept rolling
        h = np.uint64(0)
        power = np.uint64(1)
        inside = False
        end = offsets[d + 1]
        for i in range(offsets[d], end + 1):  # one step past the end closes the last token
            w = i < end and word[data[i]]
            if w:
                if not inside:
                    h = np.uint64(0)
                    power = np.uint64(1)
                h += np.uint64(data[i]) * power  # Σ c_j·Q^j, wrapping modulo 2^64
                power *= _Q
                inside = True
            elif inside:
                t = _fmix64(h)
                if seen >= ngram:  # drop the oldest token: the same sum, rolled (mod 2^64)
                    acc -= ring[head] * oldest
                acc = acc * _P + t
                ring[head] = t
                head += 1
                if head == size:
                    head = 0
                seen += 1
                inside = False
                if seen >= ngram:
                    out[pos] = np.uint32(acc & low)
                    pos += 1
        if 0 < seen < ngram:  # a short document: one shingle of all its tokens
            out[pos] = np.uint32(acc & low)
            pos += 1
        counts[d] = pos - first
    return out[:pos], counts


def shingle_hashes(data: np.ndarray, offsets: np.ndarray, ngram: int = 5,
                   hash_name: HashName = "poly") -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every document's shingles (repeats kept) and the count per document.

    ``data``/``offsets``: an Arrow string column's buffers (UTF-8 bytes, ``len + 1`` offsets). The hashes
    of document i are ``hashes[sum(counts[:i]):sum(counts[:i+1])]``.
    """
    docs = len(offsets) - 1
    if hash_name == "sha1":
        lists = [[sha1_hash32(s.encode("utf-8", "surrogatepass"))
                  for s in shingles(tokenize(bytes(data[offsets[i]:offsets[i + 1]]).decode(
                      "utf-8", "surrogatepass")), ngram)] for i in range(docs)]
        flat = np.fromiter((h for hs in lists for h in hs), dtype=np.uint32)
        return flat, np.array([len(hs) for hs in lists], dtype=np.int64)
    if docs == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    return _poly_shingles(np.asarray(data, dtype=np.uint8), np.asarray(offsets, dtype=np.int64),
                          ngram, _WORD_BYTE)


def shingle_hash(shingle: bytes, hash_name: HashName = "poly") -> int:
    """The hash of one shingle given as bytes (its tokens joined by b" "): datasketch's hashfunc."""
    if hash_name == "sha1":
        return sha1_hash32(shingle)
    data = np.frombuffer(shingle, dtype=np.uint8)
    hashes, _ = shingle_hashes(data, np.array([0, len(data)]), ngram=1 << 30)
    return int(hashes[0])


# ---------------------------------------------------------------------------------------------
# Permutations and signatures


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of datasketch's ``affine32`` scheme for ``MinHash(num_perm, seed)``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


@numba.njit(cache=True, inline="always")
def _fmix32(h: np.uint32) -> np.uint32:
    """MurmurHash3's 32-bit finalizer (Appleby), a bijection that spreads weak input hashes."""
    h ^= h >> np.uint32(16)
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h ^= h >> np.uint32(13)
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    return h ^ (h >> np.uint32(16))


@numba.njit(cache=True)
def _min_permuted(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray,
                  out: np.ndarray) -> None:
    """out[d, k] = min over document d's shingle hashes h of (a[k]·fmix32(h) + b[k]) mod 2^32.

    Compiled with numba: one pass over the shingles, the permutation loop vectorized by LLVM. The
    numpy form (a (perms × shingles) block from ``np.multiply.outer``, ``+= b``, then
    ``np.minimum.reduceat``) makes three passes through memory and is several times slower
    (bench/RESULTS.md, "Dedup speed"). The pre-mixing is done here too: as numpy operations over
    the batch it cost nearly as much as the permutations.
    """
    start = 0
    for d in range(counts.shape[0]):
        row = out[d]
        for i in range(start, start + counts[d]):
            h = _fmix32(np.uint32(hashes[i]))
            for k in range(a.shape[0]):
                row[k] = min(row[k], np.uint32(a[k] * h + b[k]))  # wraps modulo 2^32
        start += counts[d]


@dataclass(frozen=True)
class MinHasher:
    """Signatures of many documents at once.

    ``signatures(hashes, counts)`` takes the documents' shingle hashes (as ``shingle_hashes``
    returns them) and returns a ``(len(counts), num_perm)`` uint32 matrix; a document without
    shingles gets a row of 2^32 − 1 (datasketch's empty MinHash) and should be left out of LSH by
    the caller.
    """

    num_perm: int = 256
    seed: int = 1

    def __post_init__(self):
        a, b = permutations(self.num_perm, self.seed)
        object.__setattr__(self, "_a", a)
        object.__setattr__(self, "_b", b)

    def signatures(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures of documents whose shingle hashes are ``hashes``, ``counts[i]`` for doc i."""
        out = np.full((len(counts), self.num_perm), _MAX32, dtype=np.uint32)
        if len(hashes):
            _min_permuted(np.asarray(hashes, dtype=np.uint32),
                          np.asarray(counts, dtype=np.int64), self._a, self._b, out)
        return out


def distinct_shingles(hashes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's distinct shingle hashes, sorted (uint32), concatenated in document order,
    and how many each document has; from ``shingle_hashes`` output.

    One sort of (document, hash) keys and a neighbour comparison: ``np.unique`` does the same
    but is far slower on millions of keys (numpy 2.4; bench/RESULTS.md, "Dedup speed").
    """
    owner = np.repeat(np.arange(len(counts), dtype=np.uint64), counts)
    keys = (owner << np.uint64(32)) | np.asarray(hashes, dtype=np.uint64)
    keys.sort()
    if len(keys):
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    docs = (keys >> np.uint64(32)).astype(np.int64)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), np.bincount(docs, minlength=len(counts))


def set_jaccards(a_values: np.ndarray, a_counts: np.ndarray, b_values: np.ndarray,
                 b_counts: np.ndarray) -> np.ndarray:
    """The Jaccard similarity of many pairs of sets at once: pair i is ``a_counts[i]`` values of ``a_values``
    against ``b_counts[i]`` of ``b_values`` (each set sorted and distinct, concatenated in pair
    order). ``indexed_set_jaccards`` with set i of a and set i of b as pair i: one compiled merge
    per pair instead of ~20 µs of Python per pair with ``np.intersect1d``."""
    pairs = len(a_counts)
    values = np.concatenate([np.asarray(a_values, np.uint32), np.asarray(b_values, np.uint32)])
    sizes = np.concatenate([np.asarray(a_counts, np.int64), np.asarray(b_counts, np.int64)])
    return indexed_set_jaccards(values, sizes, np.arange(pairs), pairs + np.arange(pairs))


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Fraction of equal signature positions (row-wise for 2-D inputs)."""
    equal = np.asarray(sig_a) == np.asarray(sig_b)
    return equal.mean(axis=-1)


# ---------------------------------------------------------------------------------------------
# LSH banding


def _integrate(f, lo: float, hi: float, steps: int = 1000) -> float:
    """Trapezoid rule; the S-curve is smooth, 1000 steps agree with adaptive quadrature to 1e-6."""
    xs = np.linspace(lo, hi, steps + 1)
    ys = f(xs)
    return float(((ys[:-1] + ys[1:]) / 2 * np.diff(xs)).sum())


def false_positive_probability(threshold: float, bands: int, rows: int) -> float:
    """Area under the S-curve below the threshold: pairs under it that still share a band."""
    return _integrate(lambda s: 1 - (1 - s ** rows) ** bands, 0.0, threshold)


def false_negative_probability(threshold: float, bands: int, rows: int) -> float:
    """Area above the S-curve beyond the threshold: pairs over it that share no band."""
    return _integrate(lambda s: (1 - s ** rows) ** bands, threshold, 1.0)


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands·rows ≤ num_perm minimizing the weighted FP + FN probability.

    Cached: the search integrates both curves for every split of ``num_perm`` (1,466 of 256),
    and every step of a run asks again.
    """
    best, best_cost = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            cost = (fp_weight * false_positive_probability(threshold, bands, rows)
                    + fn_weight * false_negative_probability(threshold, bands, rows))
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


@numba.njit(cache=True)
def _band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) 64-bit hashes of every signature's band keys: band b of row i hashes
    ``signatures[i, b·rows:(b+1)·rows]`` with b itself, through the MurmurHash3 finalizer."""
    n = signatures.shape[0]
    out = np.empty((bands, n), np.uint64)
    for i in range(n):
        for b in range(bands):
            h = _fmix64(np.uint64(b + 1) * _P)
            for j in range(b * rows, (b + 1) * rows):
                h = _fmix64(h ^ np.uint64(signatures[i, j]))
            out[b, i] = h
    return out


@numba.njit(cache=True)
def _bucket_pairs(members: np.ndarray, bounds: np.ndarray, all_pairs_bucket: int,
                  total: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (larger, smaller) of the buckets ``members[bounds[k]:bounds[k + 1]]`` (each
    ascending): every pair of a bucket of up to ``all_pairs_bucket`` members, else a star to its
    smallest member; ``total`` pairs in all."""
    src = np.empty(total, np.int64)
    dst = np.empty(total, np.int64)
    w = 0
    for k in range(bounds.shape[0] - 1):
        start, end = bounds[k], bounds[k + 1]
        if end - start <= all_pairs_bucket:
            for i in range(start, end):
                for j in range(i + 1, end):
                    src[w] = members[j]
                    dst[w] = members[i]
                    w += 1
        else:
            for j in range(start + 1, end):
                src[w] = members[j]
                dst[w] = members[start]
                w += 1
    return src, dst


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int,
                    all_pairs_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """The LSH candidate pairs of signatures given in their files' id order, without repeats.

    Rows sharing a band key form a bucket (keys grouped by a 64-bit hash of the band number and
    its ``rows`` values: a collision of two keys only adds candidates, which verification drops);
    a bucket of up to ``all_pairs_bucket`` rows links every pair, a larger one each row to its
    first (smallest-id) row — the rule ``jobs.dedup``'s distributed banding applies. Returns
    (src, dst) row indices with src > dst, sorted. Used when the signatures fit in one process.
    """
    sigs = np.ascontiguousarray(signatures, dtype=np.uint32)
    n = sigs.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = _band_hashes(sigs, bands, rows)
    codes = []
    for b in range(bands):
        order = np.argsort(keys[b], kind="stable")  # stable: members ascend within a bucket
        key = keys[b][order]
        bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
        sizes = np.diff(bounds)
        total = int(np.where(sizes <= all_pairs_bucket, sizes * (sizes - 1) // 2, sizes - 1).sum())
        src, dst = _bucket_pairs(order.astype(np.int64), bounds, all_pairs_bucket, total)
        codes.append(src * n + dst)
    code = np.concatenate(codes)
    code.sort()  # sort + neighbour compare: np.unique is slower (see distinct_shingles)
    if len(code):
        code = code[np.r_[True, code[1:] != code[:-1]]]
    return code // n, code % n


def pair_estimates(signatures: np.ndarray, src: np.ndarray, dst: np.ndarray,
                   chunk: int = 1 << 15) -> np.ndarray:
    """``estimated_jaccard`` of rows ``src[i]`` and ``dst[i]`` of ``signatures``, in chunks so
    that memory stays at ``chunk`` pairs' worth of comparisons."""
    out = np.empty(len(src), dtype=np.float64)
    for lo in range(0, len(src), chunk):
        hi = lo + chunk
        out[lo:hi] = estimated_jaccard(signatures[src[lo:hi]], signatures[dst[lo:hi]])
    return out


@numba.njit(cache=True)
def _merge_intersections(values: np.ndarray, bounds: np.ndarray, a: np.ndarray,
                         b: np.ndarray) -> np.ndarray:
    """|set a[i] ∩ set b[i]| for sorted distinct sets ``values[bounds[k]:bounds[k + 1]]``, by
    merging the two sorted runs (no copy of either set)."""
    out = np.zeros(a.shape[0], np.int64)
    for p in range(a.shape[0]):
        i, i_end = bounds[a[p]], bounds[a[p] + 1]
        j, j_end = bounds[b[p]], bounds[b[p] + 1]
        common = 0
        while i < i_end and j < j_end:
            x, y = values[i], values[j]
            if x == y:
                common += 1
                i += 1
                j += 1
            elif x < y:
                i += 1
            else:
                j += 1
        out[p] = common
    return out


def indexed_set_jaccards(values: np.ndarray, sizes: np.ndarray, a: np.ndarray,
                         b: np.ndarray) -> np.ndarray:
    """The Jaccard similarity (|A ∩ B| / |A ∪ B|, 1.0 for two empty sets) of sets ``a[i]`` and ``b[i]``, where set k is the next ``sizes[k]`` values
    of ``values`` (each sorted and distinct, as ``distinct_shingles`` returns them). Each set is
    stored once however many pairs it is in: ``set_jaccards`` takes a copy of both sets per pair,
    which for the 13,647 pairs near the threshold in the make-run corpus meant shuffling and
    sorting every large vendored file once per pair it is in."""
    bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    inter = _merge_intersections(np.asarray(values, dtype=np.uint32), bounds, a, b)
    union = np.asarray(sizes)[a] + np.asarray(sizes)[b] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)

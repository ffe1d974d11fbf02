"""MinHash against datasketch (the reference), the banding math, short documents, normalization."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _false_negative_probability, _false_positive_probability, _optimal_param

from tests import minhash_reference as R
from udfs import minhash as M
from udfs.licenses import permissiveness_rank

CODE = '''import os

def résumé(path, *, mode="r"):
    """Read a file — politely."""
    with open(path, mode) as handle:  # 文件
        return handle.read().strip()

class Loader(object):
    def load(self, name):
        return résumé(os.path.join(self.root, name))
'''


def corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = ["def", "return", "self", "x", "y_1", "π", "数据", "0x1F", "None", "for", "in"]
    punct = [" ", "  ", "\n", "(", ")", ".", ", ", " = ", "->", "\t", "—"]
    docs = [CODE, "", "x", "x = 1", "!!! ... ???", "a b c d", "a b c d e", "a b c d e f"]
    while len(docs) < n:
        docs.append("".join(rng.choice(words) + rng.choice(punct)
                            for _ in range(rng.randint(0, 400))))
    return docs


def datasketch_signature(text: str, hash_name: str, ngram: int = 5, num_perm: int = 256,
                         seed: int = 1):
    kwargs = {} if hash_name == "sha1" else {"hashfunc": M.shingle_hash}
    m = MinHash(num_perm=num_perm, seed=seed, **kwargs)
    m.update_batch([s.encode("utf-8") for s in M.shingles(M.tokenize(text), ngram)])
    return m.hashvalues


@pytest.mark.parametrize("hash_name", ["poly", "sha1"])
def test_signatures_equal_datasketch(hash_name):
    docs = corpus(60)
    data, offsets = R.encode_docs(docs)
    hashes, counts = M.shingle_hashes(data, offsets, 5, hash_name)
    sigs = M.MinHasher(256, 1).signatures(hashes, counts)
    for i, doc in enumerate(docs):
        assert counts[i] == len(M.shingles(M.tokenize(doc), 5)), repr(doc[:40])
        assert np.array_equal(sigs[i], datasketch_signature(doc, hash_name)), repr(doc[:40])


def test_a_documents_signature_does_not_depend_on_its_batch():
    docs = corpus(40, seed=3)
    data, offsets = R.encode_docs(docs)
    whole = M.MinHasher(64, 5).signatures(*M.shingle_hashes(data, offsets, 3))
    for i in (0, 10, 39):
        alone = M.MinHasher(64, 5).signatures(*M.shingle_hashes(*R.encode_docs([docs[i]]), 3))
        assert np.array_equal(whole[i], alone[0])
        assert np.array_equal(whole[i], datasketch_signature(docs[i], "poly", 3, 64, seed=5))


def test_tokens_are_identifiers_keywords_and_numbers():
    assert M.tokenize('résumé(path, *, mode="r"):  # 文件 — ok') == [
        "résumé", "path", "mode", "r", "文件", "—", "ok"]
    assert M.tokenize("a.b->c_d 0x1F") == ["a", "b", "c_d", "0x1F"]


def test_vectorized_offsets_are_bytes_not_characters():
    # 'é' is two UTF-8 bytes: a character-offset bug would cut tokens in the wrong place
    docs = ["é é é é é x", "x é é é é é"]
    data, offsets = R.encode_docs(docs)
    hashes, counts = M.shingle_hashes(data, offsets, 5)
    assert list(counts) == [2, 2]
    assert M.shingle_hash("é é é é é".encode()) == hashes[0] == hashes[3]


def test_short_documents_do_not_collide_into_one_cluster():
    docs = ["x = 1", "y = 2", "x == 1", "return None", "{}", "[]"]
    data, offsets = R.encode_docs(docs)
    hashes, counts = M.shingle_hashes(data, offsets, 5)
    sigs = M.MinHasher(256, 1).signatures(hashes, counts)
    assert list(counts) == [1, 1, 1, 1, 0, 0]  # one whole-sequence shingle; none without tokens
    assert np.array_equal(sigs[0], sigs[2])  # the same tokens [x, 1]: a real duplicate
    assert M.estimated_jaccard(sigs[0], sigs[1]) < 0.05
    assert M.estimated_jaccard(sigs[0], sigs[3]) < 0.05
    assert (sigs[4] == np.iinfo(np.uint32).max).all()  # empty: left out of LSH by the stage


def test_estimated_jaccard_tracks_exact_jaccard():
    rng = random.Random(1)
    base = [f"tok{rng.randrange(5000)}" for _ in range(3000)]
    edited = list(base)
    for i in rng.sample(range(len(edited)), 150):
        edited[i] = "changed"
    a, b = " ".join(base), " ".join(edited)
    exact = R.exact_jaccard(set(M.shingles(M.tokenize(a), 5)), set(M.shingles(M.tokenize(b), 5)))
    data, offsets = R.encode_docs([a, b])
    sigs = M.MinHasher(256, 1).signatures(*M.shingle_hashes(data, offsets, 5))
    assert 0.55 < exact < 0.85
    assert abs(M.estimated_jaccard(sigs[0], sigs[1]) - exact) < 0.08  # ~2.5 sigma at 256 perms


def test_shingle_sets_and_their_jaccard():
    docs = corpus(30, seed=11)
    data, offsets = R.encode_docs(docs)
    hashes, counts = M.shingle_hashes(data, offsets, 5)
    sets = R.shingle_sets(hashes, counts)
    start = np.r_[0, np.cumsum(counts)]
    for i in range(len(docs)):
        want = np.unique(hashes[start[i]:start[i + 1]])
        assert np.array_equal(sets[i], want)
    # documents without shingles, first, between and last, keep their (empty) place
    i, j = [k for k in range(len(docs)) if len(sets[k]) > 10][:2]
    data, offsets = R.encode_docs(["", docs[i], "{}", docs[j], ""])
    values, sizes = M.distinct_shingles(*M.shingle_hashes(data, offsets, 5))
    assert sizes.tolist() == [0, len(sets[i]), 0, len(sets[j]), 0]
    assert np.array_equal(values, np.concatenate([sets[i], sets[j]]))
    pairs = [(8, 9), (10, 11), (0, 12), (1, 2), (3, 3), (1, 1), (6, 7)]
    want = [R.exact_jaccard(set(M.shingles(M.tokenize(docs[i]), 5)),
                            set(M.shingles(M.tokenize(docs[j]), 5))) for i, j in pairs]
    assert [R.set_jaccard(sets[i], sets[j]) for i, j in pairs] == pytest.approx(want)
    batch = M.set_jaccards(np.concatenate([sets[i] for i, _ in pairs]),
                           np.array([len(sets[i]) for i, _ in pairs]),
                           np.concatenate([sets[j] for _, j in pairs]),
                           np.array([len(sets[j]) for _, j in pairs]))
    assert list(batch) == pytest.approx(want)
    assert want[4:] == [1.0, 1.0, 0.5]  # the same doc; two empty sets; {abcde} vs +{bcdef}


@pytest.mark.parametrize("threshold,num_perm,fp,fn", [
    (0.7, 256, 0.5, 0.5), (0.5, 128, 0.5, 0.5), (0.85, 256, 0.3, 0.7), (0.9, 64, 0.5, 0.5),
    (0.3, 256, 0.7, 0.3)])
def test_banding_matches_datasketch(threshold, num_perm, fp, fn):
    assert M.optimal_bands(threshold, num_perm, fp, fn) == _optimal_param(
        threshold, num_perm, fp, fn)


def test_the_banding_search_runs_once_per_setting():
    M.optimal_bands.cache_clear()
    first = M.optimal_bands(0.7, 256, 0.01, 0.99)
    assert M.optimal_bands(0.7, 256, 0.01, 0.99) == first == (39, 6)  # the stage's default
    assert M.optimal_bands.cache_info()[:2] == (1, 1)  # (hits, misses)
    assert M.optimal_bands(0.7, 128, 0.01, 0.99) != first


def test_false_positive_and_negative_areas():
    for b, r in ((25, 10), (8, 4), (1, 1)):
        assert M.false_positive_probability(0.7, b, r) == pytest.approx(
            _false_positive_probability(0.7, b, r), abs=1e-6)
        assert M.false_negative_probability(0.7, b, r) == pytest.approx(
            _false_negative_probability(0.7, b, r), abs=1e-6)
    # one band of one row: P(candidate) = s, so FP = ∫0^t s ds and FN = ∫t^1 (1 - s) ds
    assert M.false_positive_probability(0.6, 1, 1) == pytest.approx(0.18)
    assert M.false_negative_probability(0.6, 1, 1) == pytest.approx(0.08)


def test_band_keys_are_the_bands_little_endian_bytes():
    sig = np.arange(12, dtype=np.uint32)
    keys = R.band_keys(sig, bands=3, rows=4)
    assert keys[1] == bytes([4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0])
    other = sig.copy()
    other[0] = 99
    assert R.band_keys(other, 3, 4)[1:] == keys[1:] and R.band_keys(other, 3, 4)[0] != keys[0]


def test_exact_normalization():
    assert R.normalize_for_exact("a  \r\nb\t\rc \n\n \n") == "a\nb\nc"
    assert R.content_hash("x = 1\r\n") == R.content_hash("x = 1   \n\n")
    assert R.content_hash("x = 1") != R.content_hash("x  = 1")  # inner whitespace is content
    assert R.content_hash("x = 1") != R.content_hash("\nx = 1")  # leading lines are content


def test_batch_content_hashes_equal_the_per_string_definition():
    # the compiled pass must strip exactly what str.rstrip() strips, for every width of UTF-8
    assert sorted(M._SPACE_CODES.tolist()) == [c for c in range(0x110000) if chr(c).isspace()]
    pieces = ["a", "b", " ", "\t", "\n", "\r", "\r\n", "é", "\u3000", "\x85", "\xa0",
              "\u2028", "\x0b", "\x1c", "😀", "\u2009", "\u200b", "\u0300", "x\u2000", "\u1680"]
    rng = random.Random(11)
    texts = ["", "\n", "\r", " \n \n", "a\r\n", "a\r\r\n", "\u3000", "é\u3000\r\n"] + [
        "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30))) for _ in range(5000)]
    # documents normalization only cuts at the end are hashed in place: mix them in
    plain = ["a", "b", "\n", "é", "😀", "x\u2000y"]
    texts += ["".join(rng.choice(plain) for _ in range(rng.randrange(0, 30))) + "\n" * (i % 3)
              for i in range(2000)]
    data, offsets = R.encode_docs(texts)
    in_place = M._normal_ends(data, np.asarray(offsets, dtype=np.int64)) >= 0
    assert 500 < in_place.sum() < len(texts) - 4000  # both ways are exercised
    assert M.content_hashes(data, offsets) == [R.content_hash(t) for t in texts]
    # a slice of the buffer (an Arrow slice's offsets do not start at 0)
    assert M.content_hashes(data, offsets[3:6]) == [R.content_hash(t) for t in texts[3:5]]
    with pytest.raises(ValueError, match="inside the data"):
        M.content_hashes(data[:1], offsets[:10])


def test_permissiveness_rank():
    order = ["cc0-1.0", "mit", "bsd-3-clause", "apache-2.0", "psf-2.0", "lgpl-3.0", "gpl-3.0",
             "wtfpl", None]
    ranks = [permissiveness_rank(x) for x in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert permissiveness_rank("isc") == permissiveness_rank("mit")


def _reference_pairs(sigs: np.ndarray, bands: int, rows: int, all_pairs: int) -> set:
    """Buckets by the band's exact values (a dict per band), then the bucket rule."""
    pairs = set()
    for b in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, sig in enumerate(sigs):
            buckets.setdefault(sig[b * rows:(b + 1) * rows].tobytes(), []).append(i)
        for members in buckets.values():
            if len(members) <= all_pairs:
                pairs |= {(y, x) for k, x in enumerate(members) for y in members[k + 1:]}
            else:
                pairs |= {(y, members[0]) for y in members[1:]}
    return pairs


@pytest.mark.parametrize("all_pairs", [1, 4, 64])
def test_candidate_pairs_equal_a_reference_bucketing(all_pairs):
    rng = np.random.default_rng(5)
    sigs = rng.integers(0, 2**32, (300, 24), dtype=np.uint32)
    sigs[1] = sigs[0]  # identical in every band
    sigs[7, :6] = sigs[3, :6]  # band 0 only
    sigs[20:30, 18:24] = sigs[10, 18:24]  # one bucket of 11 files in the last band: a star at 4
    sigs[40, 6:12] = sigs[41, 6:12] = sigs[42, 6:12]
    src, dst = M.candidate_pairs(sigs, bands=4, rows=6, all_pairs_bucket=all_pairs)
    got = list(zip(src.tolist(), dst.tolist()))
    assert got == sorted(set(got))  # distinct and sorted
    assert set(got) == _reference_pairs(sigs, 4, 6, all_pairs)
    assert (1, 0) in got and (7, 3) in got
    assert ((21, 20) in got) == (all_pairs >= 11)  # inside the big bucket only as every pair
    est = M.pair_estimates(sigs, src, dst, chunk=3)
    assert np.allclose(est, [np.mean(sigs[a] == sigs[b]) for a, b in got])
    assert est[got.index((1, 0))] == 1.0 and est[got.index((7, 3))] == pytest.approx(6 / 24)


def test_candidate_pairs_of_fewer_than_two_signatures():
    for n in (0, 1):
        src, dst = M.candidate_pairs(np.zeros((n, 12), np.uint32), 2, 6, 64)
        assert len(src) == len(dst) == 0


def test_indexed_set_jaccards_equal_the_pairwise_definition():
    rng = np.random.default_rng(2)
    sets = [np.unique(rng.integers(0, 50, rng.integers(0, 30))).astype(np.uint32)
            for _ in range(12)] + [np.zeros(0, np.uint32)]
    a = rng.integers(0, len(sets), 80)
    b = rng.integers(0, len(sets), 80)
    a[0] = b[0] = 12  # two empty sets: 1.0, as set_jaccard says
    values = np.concatenate(sets)
    got = M.indexed_set_jaccards(values, np.array([len(s) for s in sets]), a, b)
    assert np.allclose(got, [R.set_jaccard(sets[i], sets[j]) for i, j in zip(a, b)])
    assert got[0] == 1.0

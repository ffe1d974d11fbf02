"""Dedup quality against ground truth that owes nothing to the code under test.

**Corpus**, not the one the stage's settings were tuned on (the make-run corpus: the Python
stdlib and site-packages): source trees of other languages found on the machine — Go's standard
library (``/usr/local/go/src``), C and C++ headers (``/usr/include``), JavaScript of npm's own
packages (``/usr/lib/node_modules``), the JDK's Java sources (Temurin 25's ``lib/src.zip``) — sampled at random
(``--seed``) up to ``--mb-per-language`` each, files under 512,000 bytes, short files included.

**Planted near-duplicates**: ``--planted`` files copied with random line edits
(``bench._common.edit``) at rates from 1 % to 45 %, so their true similarity to the original spans
0.5–0.95 and beyond on both sides; a share of them are short files (under 60 tokens), where one
edit moves the similarity most.

**Ground truth**, written here and not imported from ``udfs/``: the definitions of README/udfs
restated and implemented apart — tokens are maximal runs of ASCII letters, digits, ``_`` and
non-ASCII characters (a regular expression); shingles are 5-token windows as strings, a file with
1–4 tokens has one shingle of all of them; exact duplicates share the SHA-256 of the text with
``\\n`` line ends, each line right-stripped and trailing blank lines dropped. The exact Jaccard
of every pair of files sharing a shingle comes from a sparse file × shingle matrix product
(scipy). True pairs: J ≥ 0.7; true clusters: their connected components plus exact duplicates.

**Prediction**: silver.dup_clusters of the dedup stage on local[2], run twice: the default
configuration, and the distributed path (``dedup.tuning.one_task_files=0``,
``broadcast_rows=0``, ``direct_reads`` and ``direct_writes`` false: what a cluster runs).

**Reported**: the histogram of true pairs' similarity (and of the planted pairs'); precision,
recall and F1 of same-cluster pairs against same-true-cluster pairs, *excluding* pairs of exact
duplicates (which both sides find by a hash); of true pairs (J ≥ 0.7) found in one cluster; of the
files flagged as duplicates; planted copies found by their true-similarity bin.

    python bench/dedup_quality.py --lakehouse lakehouse
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import edit, machine, spark_session, write_silver  # noqa: E402

THRESHOLD, NGRAM = 0.7, 5
RATES = (0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45)
TREES = {  # language: (where, extensions)
    "Go": ("/usr/local/go/src", (".go",)),
    "C": ("/usr/include", (".h",)),
    "JavaScript": ("/usr/lib/node_modules", (".js",)),
    "Java": ("/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip", (".java",)),
}
DISTRIBUTED = ["dedup.tuning.one_task_files=0", "dedup.tuning.broadcast_rows=0",
               "dedup.tuning.direct_reads=false", "dedup.tuning.direct_writes=false"]

# --- the definitions, restated here (not udfs.minhash) -----------------------------------------
_TOKEN = re.compile(r"[A-Za-z0-9_\u0080-\U0010FFFF]+")


def shingle_set(text: str) -> set[str]:
    tokens = _TOKEN.findall(text)
    if 0 < len(tokens) < NGRAM:
        return {" ".join(tokens)}
    return {" ".join(tokens[i:i + NGRAM]) for i in range(len(tokens) - NGRAM + 1)}


def exact_key(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    normal = "\n".join(line.rstrip() for line in lines).rstrip("\n")
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).hexdigest()


# --- corpus ------------------------------------------------------------------------------------
def sources(language: str, where: str, exts: tuple[str, ...]) -> list[tuple[str, str]]:
    """(path, text) of every UTF-8 file with one of ``exts`` under 512,000 bytes."""
    out = []
    if where.endswith(".zip"):
        with zipfile.ZipFile(where) as z:
            for info in z.infolist():
                if info.filename.endswith(exts) and info.file_size < 512_000:
                    try:
                        out.append((info.filename, z.read(info).decode("utf-8")))
                    except UnicodeDecodeError:
                        pass
        return out
    for path in sorted(Path(where).rglob("*")):
        if path.suffix in exts and path.is_file() and not path.is_symlink() \
                and path.stat().st_size < 512_000:
            try:
                out.append((str(path.relative_to(where)), path.read_text(encoding="utf-8")))
            except (UnicodeDecodeError, OSError):
                pass
    return out


def corpus(mb_per_language: float, rng: random.Random) -> list[dict]:
    from udfs.records import file_id

    rows = []
    for language, (where, exts) in TREES.items():
        if not Path(where).exists():
            print(f"{where}: missing, {language} left out", file=sys.stderr)
            continue
        files = sources(language, where, exts)
        rng.shuffle(files)
        total = 0
        for path, text in files:
            size = len(text.encode())
            if total + size > mb_per_language * 1e6:
                continue
            total += size
            repo = f"{language.lower()}-{path.split('/')[0]}"
            rows.append({"id": file_id(repo, path, text.encode()), "repo": repo, "path": path,
                         "language": language, "text": text, "size_bytes": size})
    return rows


def plant(rows: list[dict], count: int, rng: random.Random) -> tuple[list[dict], dict]:
    from udfs.records import file_id

    tokens = {r["id"]: len(_TOKEN.findall(r["text"])) for r in rows}
    short = [r for r in rows if 5 <= tokens[r["id"]] < 60]
    long_ = [r for r in rows if tokens[r["id"]] >= 60]
    picks = rng.sample(short, min(len(short), count // 5))
    picks += rng.sample(long_, min(len(long_), count - len(picks)))
    planted, origin = [], {}
    for k, row in enumerate(picks):
        rate = RATES[k % len(RATES)]
        text = edit(row["text"], rate, rng)
        repo = f"planted-{k}"
        copy = {**row, "id": file_id(repo, row["path"], text.encode()), "repo": repo,
                "text": text, "size_bytes": len(text.encode())}
        planted.append(copy)
        origin[copy["id"]] = row["id"]
    return planted, origin


def as_silver(rows: list[dict]) -> pa.Table:
    """silver.files' columns (jobs.schemas), the filter's signals computed plainly."""
    from jobs.arrow import arrow_schema
    from jobs.schemas import TABLE_SCHEMAS

    out = []
    for r in rows:
        lines = r["text"].split("\n")
        lengths = [len(line) for line in lines]
        alpha = sum(c.isalpha() for c in r["text"]) / max(len(r["text"]), 1)
        out.append({**r, "license": "mit", "stars": None, "num_lines": len(lines),
                    "alpha_fraction": alpha, "avg_line_length": sum(lengths) / len(lengths),
                    "max_line_length": max(lengths), "redactions": []})
    return pa.Table.from_pylist(out, schema=arrow_schema(TABLE_SCHEMAS["silver.files"]))


# --- truth and scoring -------------------------------------------------------------------------
def true_pairs(ids: list[str], texts: list[str]) -> tuple[dict, int]:
    """({(a, b): J} for J ≥ THRESHOLD, pairs sharing a shingle), by a sparse matrix product."""
    from scipy import sparse

    vocab: dict[str, int] = {}
    rows, cols = [], []
    sizes = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        sh = {vocab.setdefault(s, len(vocab)) for s in shingle_set(text)}
        sizes[i] = len(sh)
        rows.extend([i] * len(sh))
        cols.extend(sh)
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                          shape=(len(texts), len(vocab)))
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    jac = inter.data / np.maximum(sizes[inter.row] + sizes[inter.col] - inter.data, 1)
    keep = jac >= THRESHOLD
    return ({tuple(sorted((ids[a], ids[b]))): float(j)
             for a, b, j in zip(inter.row[keep], inter.col[keep], jac[keep])}, int(inter.nnz))


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def components(nodes, edges) -> dict:
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return {n: min(comp) for comp in nx.connected_components(graph) for n in comp}


def cluster_pairs(label: dict, exact: dict) -> set:
    """Pairs of files in one cluster, less pairs of exact duplicates."""
    members = defaultdict(list)
    for doc, lab in label.items():
        members[lab].append(doc)
    out = set()
    for docs in members.values():
        docs.sort()
        out.update((a, b) for i, a in enumerate(docs) for b in docs[i + 1:]
                   if exact[a] != exact[b])
    return out


def prf(predicted: set, truth: set) -> dict:
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(truth) if truth else 1.0
    return {"precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "predicted": len(predicted), "true": len(truth)}


def histogram(values) -> dict:
    edges = [0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0001]
    counts = np.histogram(list(values), bins=edges)[0]
    return {f"{lo:.2f}-{min(hi, 1.0):.2f}": int(c) for lo, hi, c in zip(edges, edges[1:], counts)}


def predicted_labels(lake: Path, ids: list[str]) -> dict:
    from deltalake import DeltaTable

    clusters = DeltaTable(str(lake / "silver" / "dup_clusters")).to_pyarrow_table().to_pylist()
    label = {i: i for i in ids}
    for c in clusters:
        if c["kind"] == "exact":
            for m in c["members"]:
                label[m] = c["representative"]
    near = {m: c["cluster_id"] for c in clusters if c["kind"] == "near" for m in c["members"]}
    return {i: near.get(rep, rep) for i, rep in label.items()}


def score(label: dict, truth: dict, pairs: dict, exact: dict, ids: list[str],
          origin: dict, planted_j: dict) -> dict:
    sizes_pred, sizes_true = defaultdict(int), defaultdict(int)
    for i in ids:
        sizes_pred[label[i]] += 1
        sizes_true[truth[i]] += 1
    predicted = cluster_pairs(label, exact)
    near_true = {p for p in pairs if exact[p[0]] != exact[p[1]]}
    found = defaultdict(lambda: [0, 0])
    for copy, orig in origin.items():
        key = next(k for k, v in histogram([planted_j[copy]]).items() if v)  # its bin
        found[key][0] += 1
        found[key][1] += label[copy] == label[orig]
    return {
        "cluster_pairs_excl_exact": prf(predicted, cluster_pairs(truth, exact)),
        "true_pairs_in_one_cluster_excl_exact": prf(predicted, near_true),
        "duplicate_files": prf({i for i in ids if sizes_pred[label[i]] > 1},
                               {i for i in ids if sizes_true[truth[i]] > 1}),
        "planted_found_by_true_similarity": {k: {"copies": v[0], "in_original_cluster": v[1]}
                                             for k, v in sorted(found.items())},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb-per-language", type=float, default=8.0)
    ap.add_argument("--planted", type=int, default=900)
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--out", default="bench/results/dedup_quality.json")
    args = ap.parse_args()

    from jobs.config import load_config
    from jobs.runner import run_pipeline

    rng = random.Random(args.seed)
    rows = corpus(args.mb_per_language, rng)
    planted, origin = plant(rows, args.planted, rng)
    every = rows + planted
    ids = [r["id"] for r in every]
    texts = {r["id"]: r["text"] for r in every}
    languages = defaultdict(lambda: [0, 0.0])
    for r in every:
        languages[r["language"]][0] += 1
        languages[r["language"]][1] += r["size_bytes"] / 1e6
    print(f"{len(rows)} files + {len(planted)} planted", file=sys.stderr, flush=True)

    spark = spark_session()
    started = time.perf_counter()
    pairs, shared = true_pairs(ids, [texts[i] for i in ids])
    exact = {i: exact_key(texts[i]) for i in ids}
    by_key = defaultdict(list)
    for i in ids:
        by_key[exact[i]].append(i)
    truth = components(ids, list(pairs) + [(g[0], m) for g in by_key.values() for m in g[1:]])
    planted_j = {c: jaccard(texts[c], texts[o]) for c, o in origin.items()}
    truth_seconds = time.perf_counter() - started

    lake = (REPO / "bench/.lake-quality").resolve()
    shutil.rmtree(lake, ignore_errors=True)
    write_silver(as_silver(every), lake, spark)
    results = {
        "machine": machine(), "seed": args.seed, "files": len(rows), "planted": len(planted),
        "languages": {k: {"files": v[0], "mb": round(v[1], 1)} for k, v in languages.items()},
        "short_files_under_60_tokens": sum(len(_TOKEN.findall(t)) < 60 for t in texts.values()),
        "pairs_sharing_a_shingle": shared, "true_pairs": len(pairs),
        "true_pairs_excl_exact": sum(exact[a] != exact[b] for a, b in pairs),
        "true_pair_similarity": histogram(pairs.values()),
        "planted_similarity": histogram(planted_j.values()),
        "ground_truth_seconds": round(truth_seconds, 1), "runs": {},
    }
    for name, extra in (("default", []), ("distributed", DISTRIBUTED)):
        cfg = load_config(env="local", overrides=[f"lakehouse={lake}", "spark.master=local[2]",
                                                  *extra])
        started = time.perf_counter()
        [report] = run_pipeline(cfg, ["dedup"], spark=spark).reports
        results["runs"][name] = {
            "stage": {"rows_in": report.rows_in, "rows_out": report.rows_out,
                      "dropped": report.dropped,
                      "seconds": round(time.perf_counter() - started, 1)},
            **score(predicted_labels(lake, ids), truth, pairs, exact, ids, origin, planted_j)}
        print(json.dumps({name: results["runs"][name]}, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dedup quality against brute-force ground truth.

Input: silver.files of a lakehouse (``make run`` builds it from stdlib + site-packages, which hold
real vendored copies), plus planted near-duplicates: ``--planted`` random files copied into a new
repository with random line edits at known rates (``bench._common.edit``).

Ground truth: the exact Jaccard similarity of the shingle sets (the stage's own tokens and 5-gram
shingles, ``udfs.minhash``; shingles compared as strings, not hashes) of *every* pair of files
that share at least one shingle, from a sparse document × shingle matrix product. Two files are a
true pair when J ≥ threshold; true clusters are the connected components of the true pairs, plus
exact duplicates (identical normalized content).

Prediction: silver.dup_clusters from running the dedup stage on local[2].

Reported: precision/recall/F1 of (1) same-cluster pairs against same-true-cluster pairs, the
clustering metric the goal (F1 ≥ 0.97) refers to; (2) true pairs (J ≥ t) found in one predicted
cluster; (3) the set of files removed, against the set a perfect run would remove; and the recall
of planted copies by edit rate.

    python bench/dedup_quality.py --lakehouse lakehouse
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    edit,
    machine,
    planted_copy,
    read_silver,
    spark_session,
    with_rows,
    write_silver,
)
from tests.minhash_reference import content_hash  # noqa: E402
from udfs.minhash import shingles, tokenize  # noqa: E402

RATES = (0.02, 0.05, 0.1, 0.2, 0.3)


def prf(predicted: set, truth: set) -> dict:
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(truth) if truth else 1.0
    return {"precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "predicted": len(predicted), "true": len(truth)}


def pairs_of(clusters: dict) -> set:
    members = defaultdict(list)
    for doc, label in clusters.items():
        members[label].append(doc)
    out = set()
    for docs in members.values():
        docs.sort()
        out.update((a, b) for i, a in enumerate(docs) for b in docs[i + 1:])
    return out


def components(nodes, edges) -> dict:
    """Each node's component, labelled by its smallest node (networkx)."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return {n: min(comp) for comp in nx.connected_components(graph) for n in comp}


def ground_truth(ids: list[str], texts: list[str], ngram: int, threshold: float):
    """(true pairs with J ≥ threshold among files with shingles, their J values)."""
    from scipy import sparse

    vocab: dict[str, int] = {}
    rows, cols = [], []
    sizes = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        sh = {vocab.setdefault(s, len(vocab)) for s in shingles(tokenize(text), ngram)}
        sizes[i] = len(sh)
        rows.extend([i] * len(sh))
        cols.extend(sh)
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                          shape=(len(texts), len(vocab)))
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    jac = inter.data / np.maximum(union, 1)
    keep = jac >= threshold
    pairs = {tuple(sorted((ids[a], ids[b]))): float(j)
             for a, b, j in zip(inter.row[keep], inter.col[keep], jac[keep])}
    return pairs, int(inter.nnz)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lakehouse", default="lakehouse", help="lakehouse with silver.files")
    ap.add_argument("--planted", type=int, default=300, help="planted near-duplicate copies")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="bench/results/dedup_quality.json")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override for the stage, e.g. dedup.verify=false")
    args = ap.parse_args()

    from jobs.config import load_config
    from jobs.runner import run_pipeline

    table = read_silver(args.lakehouse)
    rng = random.Random(args.seed)
    rows = table.to_pylist()
    candidates = [r for r in rows if len(tokenize(r["text"])) >= 200]
    planted, planted_rate = [], {}
    for k, row in enumerate(rng.sample(candidates, min(args.planted, len(candidates)))):
        rate = RATES[k % len(RATES)]
        copy = planted_copy(row, edit(row["text"], rate, rng), f"planted-{rate}")
        planted.append(copy)
        planted_rate[copy["id"]] = (rate, row["id"])
    lake = Path("bench/.lake-quality").resolve()
    shutil.rmtree(lake, ignore_errors=True)
    spark = spark_session()
    write_silver(with_rows(table, planted), lake, spark)
    all_rows = rows + planted
    print(f"{len(rows)} files + {len(planted)} planted copies", flush=True)

    cfg = load_config(env="local", overrides=[f"lakehouse={lake}", "spark.master=local[2]",
                                              *args.overrides])
    started = time.perf_counter()
    [report] = run_pipeline(cfg, ["dedup"], spark=spark).reports
    stage_seconds = time.perf_counter() - started
    from deltalake import DeltaTable

    clusters = DeltaTable(str(lake / "silver" / "dup_clusters")).to_pyarrow_table().to_pylist()

    # predicted label per file: exact duplicates → their representative → its near cluster
    ids = [r["id"] for r in all_rows]
    label = {i: i for i in ids}
    for c in clusters:
        if c["kind"] == "exact":
            for m in c["members"]:
                label[m] = c["representative"]
    near = {m: c["cluster_id"] for c in clusters if c["kind"] == "near" for m in c["members"]}
    label = {i: near.get(rep, rep) for i, rep in label.items()}

    started = time.perf_counter()
    d = cfg.dedup
    true_pairs, shared = ground_truth(ids, [r["text"] for r in all_rows], d.ngram, d.threshold)
    by_hash = defaultdict(list)
    for r in all_rows:
        by_hash[content_hash(r["text"])].append(r["id"])
    exact_edges = [(g[0], m) for g in by_hash.values() for m in g[1:]]
    truth = components(ids, list(true_pairs) + exact_edges)
    truth_seconds = time.perf_counter() - started

    predicted_pairs, true_cluster_pairs = pairs_of(label), pairs_of(truth)
    sizes_pred, sizes_true = defaultdict(int), defaultdict(int)
    for i in ids:
        sizes_pred[label[i]] += 1
        sizes_true[truth[i]] += 1
    dup_pred = {i for i in ids if sizes_pred[label[i]] > 1}
    dup_true = {i for i in ids if sizes_true[truth[i]] > 1}
    planted_recall = {}
    for rate in RATES:
        got = [label[c] == label[orig] for c, (r, orig) in planted_rate.items() if r == rate]
        truly = [truth[c] == truth[orig] for c, (r, orig) in planted_rate.items() if r == rate]
        planted_recall[str(rate)] = {"copies": len(got), "found": sum(got),
                                     "truly_similar": sum(truly)}
    result = {
        "machine": machine(),
        "files": len(all_rows), "planted": len(planted), "overrides": args.overrides,
        "verify": d.verify,
        "threshold": d.threshold, "num_perm": d.num_perm, "ngram": d.ngram,
        "bands_rows": list(d.banding()),
        "pairs_sharing_a_shingle": shared, "true_pairs": len(true_pairs),
        "cluster_pairs": prf(predicted_pairs, true_cluster_pairs),
        "true_pairs_in_one_cluster": prf(predicted_pairs, set(true_pairs)),
        "duplicate_files": prf(dup_pred, dup_true),
        "planted_by_edit_rate": planted_recall,
        "stage": {"rows_in": report.rows_in, "rows_out": report.rows_out,
                  "dropped": report.dropped, "seconds": round(stage_seconds, 1)},
        "ground_truth_seconds": round(truth_seconds, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

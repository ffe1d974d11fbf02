"""Dedup speed, like for like: the same files, shingles, permutations, bands and verification on
every side, each side run ``--repeat`` times, the sides interleaved round by round, cold and warm
reported apart.

Sides (5-gram shingles of ``udfs.minhash.tokenize`` tokens, 256 permutations with seed 1,
39 bands × 6 rows, Jaccard threshold 0.7, exact duplicates first by the normalized content hash):

- **datasketch** (the reference library, one process, one core): the best a user writes with it.
  ``MinHash.bulk`` over each file's shingles (its batch path: one ``update_batch`` per file, its
  default SHA-1 hash; 1,000 files per call), ``MinHashLSH(num_perm=256, params=(39, 6))`` insert
  and query, the exact Jaccard of the two shingle sets for every candidate pair (sets kept as
  sorted arrays of 64-bit shingle hashes, so that 1.4 GB of text fits in memory), union-find.
- **kernels**: codemill's own compiled kernels (``udfs.minhash``) in one process without Spark,
  with the stage's verification rule (exact Jaccard when the signature estimate is within
  ``verify_margin`` of the threshold) and scipy's connected components: what Spark costs or buys.
- **stage, as a process**: ``codemill stage dedup`` in a fresh process, Spark's start included,
  as a user runs it (default config, so the run's report.html and MLflow run are included), with
  the default ``dedup.tuning`` and with its one-machine paths off (``direct_reads``,
  ``direct_writes`` false, ``one_task_files`` and ``broadcast_rows`` 0: the distributed path a
  cluster takes). The ledger's own seconds for the stage are recorded too.
- **stage, warm**: the same two configurations run in this process's warm Spark session.
- **connect** (opt in: ``--sides …,connect``): ``codemill stage dedup --set
  spark.master=sc://…`` as a fresh client process against a Spark Connect server on local[2]
  that the bench starts once and keeps (``tests.test_connect.running_connect_server``): a
  cluster user's warm JVM. The server's start is not counted; its first run is the cold one.
  Over Connect the stage takes its distributed path (README, "Spark Connect").
- **text-dedup** 0.4.0 (``--text-dedup-python``: a virtualenv with text-dedup, whose pins clash
  with ours): ``python -m text_dedup.minhash --num_proc 1`` on the same texts as JSONL, the same
  n-gram size, permutations, bands and threshold, whole process (loading with ``datasets``
  included). Its own tokenizer (split on non-alphanumerics), its own exact step, and no
  verification of candidate pairs: its kept count differs for those reasons. Its Spark job
  (``minhash_spark.py``) needs GraphFrames' jar, which Maven Central does not serve
  (``io.graphframes:graphframes-spark4_2.13:0.10.0``: not found), so the single-process job
  stands in for it.

Distinct content at every size: size k holds the base files and k − 1 copies of each, copy j
of a file edited at ``--edit-rate`` (each line, with that probability, deleted, duplicated
elsewhere, or with one identifier renamed; ``bench._common.edit``, seeded by file and copy), so
copies are near duplicates of their original at a spread of similarities, never exact ones.

Round 0 of each size is reported as **cold** (the first run after the table was written: a fresh
JVM for the processes, the session's first dedup of that table, the first call of the kernels);
rounds 1..repeat as **warm** (median, and every run). MB = the UTF-8 size of the texts.

    python bench/dedup_speed.py --lakehouse lakehouse --base-mb 32 --scales 1,2,4,8 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import edit, machine, read_silver, spark_session, write_silver  # noqa: E402

NGRAM, NUM_PERM, BANDS, ROWS, THRESHOLD = 5, 256, 39, 6, 0.7
FAST_PATHS_OFF = ["dedup.tuning.direct_reads=false", "dedup.tuning.direct_writes=false",
                  "dedup.tuning.one_task_files=0", "dedup.tuning.broadcast_rows=0"]


def base_table(lakehouse: str, base_mb: float) -> pa.Table:
    """silver.files' rows in id order, up to ``base_mb`` MB of text (all of it with 0)."""
    table = read_silver(lakehouse).sort_by("id")
    if base_mb <= 0:
        return table
    sizes = np.cumsum(table.column("size_bytes").to_numpy())
    return table.slice(0, int(np.searchsorted(sizes, base_mb * 1e6)) + 1)


def scaled(table: pa.Table, factor: int, rate: float) -> pa.Table:
    from udfs.records import file_id

    parts = [table]
    rows = table.to_pylist()
    for k in range(1, factor):
        copies = []
        for r in rows:
            text = edit(r["text"], rate, random.Random(f"{r['id']}/{k}"))
            repo = f"{r['repo']}-copy{k}"
            copies.append({**r, "text": text, "size_bytes": len(text.encode()), "repo": repo,
                           "id": file_id(repo, r["path"], text.encode())})
        parts.append(pa.Table.from_pylist(copies, schema=table.schema))
    # id order, as the stage ranks files: LSH buckets of over 64 files link each file to the
    # bucket's first, so the kernels side must see the same order to keep the same files
    return pa.concat_tables(parts).sort_by("id")


def _exact_unique(texts: list[str]) -> list[int]:
    """Indices of the first file of each normalized content hash (both sides' exact step)."""
    from tests.minhash_reference import content_hash

    seen: dict[str, int] = {}
    return [i for i, t in enumerate(texts) if seen.setdefault(content_hash(t), i) == i]


def run_datasketch(texts: list[str]) -> dict:
    from datasketch import MinHash, MinHashLSH

    from udfs.minhash import shingles, tokenize

    started = time.perf_counter()
    unique = _exact_unique(texts)
    # Each file's shingles are kept for the exact Jaccard of candidates as a sorted array of
    # their 64-bit hashes (Python's str hash, fixed within the process), and signed in chunks:
    # sets of shingle strings, and all files' shingles as bytes at once, took over 22 GB at
    # 1.4 GB of text and were killed. A hash collision could only merge two shingles.
    sets: dict[int, np.ndarray] = {}
    signatures = []
    for start in range(0, len(unique), 1000):
        chunk = []
        for i in unique[start:start + 1000]:
            sh = set(shingles(tokenize(texts[i]), NGRAM))
            if sh:
                sets[i] = np.unique(np.fromiter(map(hash, sh), dtype=np.int64, count=len(sh)))
                chunk.append([s.encode("utf-8", "surrogatepass") for s in sh])
        signatures += MinHash.bulk(chunk, num_perm=NUM_PERM, seed=1) if chunk else []
    ids = list(sets)
    lsh = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS))
    for i, m in zip(ids, signatures):
        lsh.insert(i, m)
    parent = {i: i for i in ids}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pairs = edges = 0
    for i, m in zip(ids, signatures):
        for j in lsh.query(m):
            if j >= i:
                continue
            pairs += 1
            a, b = sets[i], sets[j]
            common = len(np.intersect1d(a, b, assume_unique=True))
            if common / (len(a) + len(b) - common) >= THRESHOLD:
                edges += 1
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    kept = len({find(i) for i in ids}) + len(unique) - len(ids)
    return {"seconds": time.perf_counter() - started, "cores": 1, "kept": kept,
            "exact_unique": len(unique), "candidate_pairs": pairs, "edges": edges}


def run_kernels(texts: list[str], verify_margin: float) -> dict:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from udfs.minhash import (
        MinHasher,
        candidate_pairs,
        content_hashes,
        distinct_shingles,
        indexed_set_jaccards,
        pair_estimates,
        shingle_hashes,
    )

    started = time.perf_counter()
    column = pa.array(texts, type=pa.large_string())
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[:len(texts) + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)
    seen: dict[str, int] = {}
    unique = [i for i, h in enumerate(content_hashes(data, offsets)) if seen.setdefault(h, i) == i]
    docs = pa.array([texts[i] for i in unique], type=pa.large_string())
    offsets = np.frombuffer(docs.buffers()[1], dtype=np.int64)[:len(unique) + 1]
    data = np.frombuffer(docs.buffers()[2], dtype=np.uint8)
    hashes, counts = shingle_hashes(data, offsets, NGRAM)
    signed = np.flatnonzero(counts > 0)
    signatures = MinHasher(NUM_PERM).signatures(hashes, counts)[signed]
    src, dst = candidate_pairs(signatures, BANDS, ROWS, all_pairs_bucket=64)
    estimate = pair_estimates(signatures, src, dst)
    values, sizes = distinct_shingles(hashes, counts)
    sizes = sizes[signed]  # a file without shingles has no values: the others' stay in order
    near = np.abs(estimate - THRESHOLD) <= verify_margin
    similar = estimate >= THRESHOLD
    similar[near] = indexed_set_jaccards(values, sizes, src[near], dst[near]) >= THRESHOLD
    n = len(signed)
    graph = coo_matrix((np.ones(int(similar.sum())), (src[similar], dst[similar])), shape=(n, n))
    components = connected_components(graph, directed=False)[0] if n else 0
    kept = components + len(unique) - n
    return {"seconds": time.perf_counter() - started, "cores": 1, "kept": int(kept),
            "exact_unique": len(unique), "candidate_pairs": int(len(src)),
            "edges": int(similar.sum())}


def run_stage_process(lake: Path, extra: list[str]) -> dict:
    from deltalake import DeltaTable

    cmd = [sys.executable, "-m", "jobs.cli", "stage", "dedup", "--set", f"lakehouse={lake}"]
    for o in extra:
        cmd += ["--set", o]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    ledger = DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    row = max((r for r in ledger if r["stage"] == "dedup" and not r["dry_run"]),
              key=lambda r: r["run_id"])
    return {"seconds": wall, "stage_seconds": row["seconds"], "cores": 2, "kept": row["rows_out"]}


def run_stage_warm(spark, lake: Path, extra: list[str]) -> dict:
    from jobs.config import load_config
    from jobs.runner import run_pipeline

    cfg = load_config(env="local", overrides=[f"lakehouse={lake}", "spark.master=local[2]",
                                              *extra])
    started = time.perf_counter()
    [report] = run_pipeline(cfg, ["dedup"], spark=spark).reports
    return {"seconds": time.perf_counter() - started, "stage_seconds": report.seconds,
            "cores": 2, "kept": report.rows_out}


def text_dedup(python: str, texts: list[str]) -> dict:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "input.jsonl")
        with data.open("w") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"id": i, "text": text}) + "\n")
        cmd = [python, "-m", "text_dedup.minhash", "--path", "json", "--data_files", str(data),
               "--split", "train", "--cache_dir", f"{tmp}/cache", "--output", f"{tmp}/out",
               "--column", "text", "--num_perm", str(NUM_PERM), "--threshold", str(THRESHOLD),
               "--ngram", str(NGRAM), "--b", str(BANDS), "--r", str(ROWS), "--num_proc", "1"]
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"text-dedup failed:\n{(done.stdout + done.stderr)[-3000:]}")
        # the rows it kept, read back by its own environment (datasets is not ours)
        count = subprocess.run([python, "-c", "import sys; from datasets import load_from_disk; "
                                "print(len(load_from_disk(sys.argv[1])))", f"{tmp}/out"],
                               capture_output=True, text=True, env=env, check=True)
    return {"seconds": seconds, "cores": 1, "kept": int(count.stdout.split()[-1])}


def summarize(runs: list[dict], mb: float) -> dict:
    warm = runs[1:] or runs
    seconds = statistics.median(r["seconds"] for r in warm)
    out = {"cold_seconds": round(runs[0]["seconds"], 2), "warm_seconds": round(seconds, 2),
           "warm_runs": [round(r["seconds"], 2) for r in warm], "cores": runs[0]["cores"],
           "kept": sorted({r["kept"] for r in runs}),
           "warm_mb_per_s_per_core": round(mb / seconds / runs[0]["cores"], 3),
           "cold_mb_per_s_per_core": round(mb / runs[0]["seconds"] / runs[0]["cores"], 3)}
    if "stage_seconds" in runs[0]:
        out["stage_seconds_warm"] = round(statistics.median(r["stage_seconds"] for r in warm), 2)
    for key in ("exact_unique", "candidate_pairs", "edges"):
        if key in runs[0]:
            out[key] = runs[0][key]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lakehouse", default="lakehouse", help="lakehouse with silver.files")
    ap.add_argument("--base-mb", type=float, default=32.0,
                    help="MB of silver.files (in id order) at 1×; 0 for all of it")
    ap.add_argument("--scales", default="1,2,4,8")
    ap.add_argument("--edit-rate", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3, help="warm rounds after the cold one")
    ap.add_argument("--sides", default="datasketch,kernels,process,process_off,warm,warm_off")
    ap.add_argument("--text-dedup-python", help="python of a virtualenv with text-dedup")
    ap.add_argument("--text-dedup-scales", default=None,
                    help="sizes that run text-dedup too (default: every size)")
    ap.add_argument("--out", default="bench/results/dedup_speed.json")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    from jobs.config import load_config

    margin = load_config(env="local").dedup.verify_margin
    base = base_table(args.lakehouse, args.base_mb)
    spark = spark_session()
    sides = {
        "datasketch": lambda texts, lake: run_datasketch(texts),
        "kernels": lambda texts, lake: run_kernels(texts, margin),
        "process": lambda texts, lake: run_stage_process(lake, []),
        "process_off": lambda texts, lake: run_stage_process(lake, FAST_PATHS_OFF),
        "warm": lambda texts, lake: run_stage_warm(spark, lake, []),
        "warm_off": lambda texts, lake: run_stage_warm(spark, lake, FAST_PATHS_OFF),
    }
    chosen = args.sides.split(",")
    with contextlib.ExitStack() as stack:
        if "connect" in chosen:
            from tests.test_connect import running_connect_server

            url = stack.enter_context(
                running_connect_server(REPO / "bench" / ".connect-server.log"))
            sides["connect"] = lambda texts, lake: run_stage_process(
                lake, [f"spark.master={url}"])
        if args.text_dedup_python:
            sides["text_dedup"] = lambda texts, lake: text_dedup(args.text_dedup_python, texts)
        td_scales = {int(x) for x in (args.text_dedup_scales or args.scales).split(",")}
        results = {"machine": machine(), "edit_rate": args.edit_rate, "base_mb": args.base_mb,
                   "repeat": args.repeat, "sizes": []}
        for factor in [int(x) for x in args.scales.split(",")]:
            table = scaled(base, factor, args.edit_rate)
            texts = table.column("text").to_pylist()
            mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
            lake = (REPO / f"bench/.lake-speed-{factor}x").resolve()
            shutil.rmtree(lake, ignore_errors=True)
            write_silver(table, lake, spark)
            here = chosen + (["text_dedup"] if args.text_dedup_python and factor in td_scales else [])
            runs: dict[str, list[dict]] = {name: [] for name in here}
            for round_ in range(args.repeat + 1):
                # rotate the order each round: no side always runs right after the same one
                for name in here[round_ % len(here):] + here[:round_ % len(here)]:
                    runs[name].append(sides[name](texts, lake))
                    print(f"{factor}x round {round_} {name}: {runs[name][-1]['seconds']:.1f} s",
                          file=sys.stderr, flush=True)
            row = {"scale": factor, "files": table.num_rows, "mb": round(mb, 1),
                   **{name: summarize(r, mb) for name, r in runs.items()}}
            if "datasketch" in row:
                ds = row["datasketch"]["warm_mb_per_s_per_core"]
                row["ratio_per_core_vs_datasketch"] = {
                    name: round(r["warm_mb_per_s_per_core"] / ds, 3)
                    for name, r in row.items() if isinstance(r, dict) and "warm_mb_per_s_per_core" in r}
                row["ratio_per_core_vs_datasketch_cold"] = {
                    name: round(r["cold_mb_per_s_per_core"] / row["datasketch"]["cold_mb_per_s_per_core"], 3)
                    for name, r in row.items() if isinstance(r, dict) and "cold_mb_per_s_per_core" in r}
            results["sizes"].append(row)
            print(json.dumps(row, indent=2), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

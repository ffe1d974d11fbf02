"""Dedup speed, side by side on the same files and parameters (5-grams, 256 permutations, 0.7).

- **codemill**: the dedup stage (``codemill stage dedup``: signatures, exact and near clusters,
  connected components, and writing silver.unique_files / dup_clusters / rejects / ledger to Delta)
  on Spark local[2], timed inside one warm session, so JVM start-up is not counted; the first run
  of the session is also reported ("cold"). Warm runs vary by up to a third on a shared VM (the
  JVM's JIT, the page cache, the neighbours), so each size runs ``--repeat`` rounds of (codemill,
  codemill without writes, datasketch) and each column's figure is the median of its runs: both
  sides are timed over the same stretch of the VM's drift (``--baseline-repeat`` caps the
  datasketch runs, which take minutes at 4×).
  ``codemill_no_writes``: the same run with ``dry_run`` — every decision computed and counted
  (signatures, clusters, the ledger's tally), no Delta table written — which does the same work
  as the datasketch column.
- **datasketch**, one process: the same normalized content hash for exact duplicates, then per file
  ``tokenize`` → 5-gram shingles → ``MinHash.update_batch`` (its default SHA-1 hash), insert into
  ``MinHashLSH(threshold=0.7, num_perm=256)``, query every file and union the candidates. No
  writing.
- **text-dedup** (``python -m text_dedup.minhash``, its own tokenizer), ``--num_proc 1``, from a
  separate virtualenv (its pins clash with ours: ``rich<14``, ``urllib3<=2``); wall time of the
  process, which includes loading the JSONL with ``datasets`` and saving its output.

Sizes 1×, 2×, 4× the input: copy k of a file gets one extra comment line, so copies are near (not
exact) duplicates and really go through MinHash and clustering.

    python bench/dedup_speed.py --lakehouse lakehouse [--text-dedup-python /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, read_silver, spark_session, write_silver  # noqa: E402
from tests.minhash_reference import content_hash  # noqa: E402
from udfs.minhash import shingles, tokenize  # noqa: E402


def scaled(table: pa.Table, factor: int) -> pa.Table:
    from udfs.records import file_id

    parts = [table]
    for k in range(1, factor):
        rows = table.to_pylist()
        for r in rows:
            r["text"] = f"{r['text']}\n# copy {k}\n"
            r["size_bytes"] = len(r["text"].encode())
            r["repo"] = f"{r['repo']}-copy{k}"
            r["id"] = file_id(r["repo"], r["path"], r["text"].encode())
        parts.append(pa.Table.from_pylist(rows, schema=table.schema))
    return pa.concat_tables(parts)


def run_datasketch(texts: list[str]) -> dict:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    seen: dict[str, int] = {}
    unique = []
    for i, text in enumerate(texts):
        if seen.setdefault(content_hash(text), i) == i:
            unique.append(i)
    lsh = MinHashLSH(threshold=0.7, num_perm=256)
    sigs = {}
    for i in unique:
        sh = shingles(tokenize(texts[i]), 5)
        if not sh:
            continue
        m = MinHash(num_perm=256)
        m.update_batch([s.encode("utf-8") for s in sh])
        sigs[i] = m
        lsh.insert(i, m)
    parent = {i: i for i in sigs}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in sigs.items():
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    clusters = len({find(i) for i in sigs})
    return {"seconds": time.perf_counter() - started, "cores": 1,
            "kept": clusters + (len(unique) - len(sigs))}


def run_text_dedup(python: str, texts: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "input.jsonl")
        with data.open("w") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"id": i, "text": text}) + "\n")
        cmd = [python, "-m", "text_dedup.minhash", "--path", "json", "--data_files", str(data),
               "--split", "train", "--cache_dir", f"{tmp}/cache", "--output", f"{tmp}/out",
               "--column", "text", "--num_perm", "256", "--threshold", "0.7", "--ngram", "5",
               "--num_proc", "1"]
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        seconds = time.perf_counter() - started
    if done.returncode:
        return {"error": (done.stdout + done.stderr)[-2000:]}
    phases = [line.strip() for line in (done.stdout + done.stderr).splitlines()
              if any(p in line for p in ("MinHashing", "Clustering", "Total", "After"))]
    return {"seconds": seconds, "cores": 1, "log": phases[-8:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lakehouse", default="lakehouse", help="lakehouse with silver.files")
    ap.add_argument("--scales", default="1,2,4")
    ap.add_argument("--text-dedup-python", help="python of a virtualenv with text-dedup")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds per size: warm codemill runs with and without writes (medians)")
    ap.add_argument("--baseline-repeat", type=int, default=3,
                    help="datasketch runs per size, one per round up to --repeat (median)")
    ap.add_argument("--out", default="bench/results/dedup_speed.json")
    args = ap.parse_args()
    if args.repeat < 1 or args.baseline_repeat < 1:
        ap.error("--repeat and --baseline-repeat must be at least 1")

    from jobs.config import load_config
    from jobs.runner import run_pipeline

    base = read_silver(args.lakehouse)
    spark = spark_session()
    results = {"machine": machine(), "runs": []}
    first = True
    for factor in [int(x) for x in args.scales.split(",")]:
        table = scaled(base, factor)
        mb = sum(table.column("size_bytes").to_pylist()) / 1e6
        lake = Path(f"bench/.lake-speed-{factor}x").resolve()
        shutil.rmtree(lake, ignore_errors=True)
        write_silver(table, lake, spark)
        cfg = load_config(env="local", overrides=[f"lakehouse={lake}", "spark.master=local[2]"])
        cold = None
        if first:  # the session's first run is cold
            started = time.perf_counter()
            run_pipeline(cfg, ["dedup"], spark=spark)
            cold = time.perf_counter() - started
            first = False

        # Rounds of (codemill, codemill without writes, datasketch), so that each side's runs are
        # spread over the same stretch of time: this VM's speed drifts by up to a quarter within
        # minutes, and one datasketch run after all of codemill's moved the ratio with it.
        texts = table.column("text").to_pylist()
        timings: dict[str, list[float]] = {"codemill": [], "codemill_no_writes": [],
                                           "datasketch": []}
        reports, baseline = {}, None
        for _ in range(args.repeat):
            for name, dry_run in (("codemill", False), ("codemill_no_writes", True)):
                started = time.perf_counter()
                [reports[name]] = run_pipeline(cfg, ["dedup"], dry_run=dry_run,
                                               spark=spark).reports
                timings[name].append(round(time.perf_counter() - started, 2))
            if args.baseline_repeat > len(timings["datasketch"]):
                baseline = run_datasketch(texts)
                timings["datasketch"].append(round(baseline["seconds"], 2))
        row = {"scale": factor, "files": table.num_rows, "mb": round(mb, 1)}
        for name in ("codemill", "codemill_no_writes"):
            row[name] = {"seconds": statistics.median(timings[name]), "runs": timings[name],
                         "cores": 2, "kept": reports[name].rows_out}
        row["codemill"]["cold_seconds"] = cold
        row["datasketch"] = {**baseline, "seconds": statistics.median(timings["datasketch"]),
                             "runs": timings["datasketch"]}
        if args.text_dedup_python:
            row["text_dedup"] = run_text_dedup(args.text_dedup_python, texts)
        for name in ("codemill", "codemill_no_writes", "datasketch", "text_dedup"):
            r = row.get(name)
            if r and "seconds" in r:
                r["mb_per_s_per_core"] = round(mb / r["seconds"] / r["cores"], 2)
                r["seconds"] = round(r["seconds"], 1)
        ds = row["datasketch"]["mb_per_s_per_core"]
        row["ratio_codemill_vs_datasketch_per_core"] = round(
            row["codemill"]["mb_per_s_per_core"] / ds, 2)
        row["ratio_codemill_no_writes_vs_datasketch_per_core"] = round(
            row["codemill_no_writes"]["mb_per_s_per_core"] / ds, 2)
        if "mb_per_s_per_core" in row.get("text_dedup", {}):
            row["ratio_codemill_vs_text_dedup_per_core"] = round(
                row["codemill"]["mb_per_s_per_core"] / row["text_dedup"]["mb_per_s_per_core"], 2)
        results["runs"].append(row)
        print(json.dumps(row, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

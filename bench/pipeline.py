"""The whole pipeline's throughput and memory, as a user runs it, and how they grow with the input.

For each size, ``codemill run`` in a fresh process (Spark's start included, default config: every
stage of conf/pipeline.yaml, report.html and the MLflow run) on a fresh lakehouse:

- **1×** is the make-run corpus (``data/corpus``, ``codemill corpus``) and this repository's git
  history, as ``make run`` reads them.
- **k×** adds k − 1 copies of every repository of the corpus, each code file of copy j edited at
  ``--edit-rate`` (``bench._common.edit``: each line, with that probability, deleted, duplicated
  elsewhere or with an identifier renamed; seeded by path and copy): distinct content that is
  near, not exactly, duplicate. Other files (licenses, metadata) are hard links. The git history
  is the same at every size.

Reported per size: wall seconds and MB/s per core end to end (MB = bytes of the files ingest read,
from its ledger row); per stage its ledger seconds, MB in and MB/s per core; peak resident memory
of the driver's Python process, of the JVM (driver and executors: local mode), and of the Python
workers (the largest one and their largest sum at one moment), sampled every 0.2 s with psutil.

And what splitting costs beyond parsing: tree-sitter's bare ``Parser.parse`` of the same files
(silver.unique_files of the 1× run, each file once, one process: ``bench/split_speed.py``'s
parsers) in MB/s per core, against the split stage's MB/s per core in the run.

    python bench/pipeline.py --corpus data/corpus --scales 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import edit, machine  # noqa: E402

CORES = os.cpu_count() or 1


def scaled_corpus(corpus: Path, factor: int, rate: float) -> Path:
    """``corpus`` itself at 1×; else a folder with its repositories and k − 1 edited copies."""
    if factor == 1:
        return corpus
    from udfs.languages import language_for_path

    out = REPO / f"bench/.pipeline-corpus-{factor}x"
    shutil.rmtree(out, ignore_errors=True)
    for repo in sorted(p for p in corpus.iterdir() if p.is_dir()):
        for copy in range(factor):
            target = out / (repo.name if copy == 0 else f"{repo.name}-copy{copy}")
            for path in sorted(repo.rglob("*")):
                if path.is_symlink() or not path.is_file():
                    continue
                dest = target / path.relative_to(repo)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if copy and language_for_path(path.name):
                    try:
                        text = path.read_text(encoding="utf-8")
                    except (UnicodeDecodeError, OSError):
                        os.link(path, dest)
                        continue
                    rel = path.relative_to(corpus).as_posix()
                    dest.write_text(edit(text, rate, random.Random(f"{rel}/{copy}")),
                                    encoding="utf-8")
                else:
                    os.link(path, dest)
    return out


class Peaks:
    """Peak RSS of a process tree: the root (the driver's Python), its JVMs, and the Python
    processes under a JVM (Spark's Python workers and their daemon)."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = {"driver_python_mb": 0.0, "jvm_mb": 0.0, "workers_sum_mb": 0.0,
                     "worker_max_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = {p.pid: p.memory_info().rss / 1e6 for p in procs}
                names = {p.pid: p.name() for p in procs}
                jvms = [p for p in procs if names[p.pid] == "java"]
                workers = {c.pid for j in jvms for c in j.children(recursive=True)
                           if names.get(c.pid, "").startswith("python")}
                now = {"driver_python_mb": rss[self.root.pid],
                       "jvm_mb": sum(rss[j.pid] for j in jvms),
                       "workers_sum_mb": sum(rss[w] for w in workers if w in rss),
                       "worker_max_mb": max((rss[w] for w in workers if w in rss), default=0.0)}
                for k, v in now.items():
                    self.peak[k] = max(self.peak[k], v)
            except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
                pass
            self._stop.wait(0.2)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {k: round(v) for k, v in self.peak.items()}


def run_pipeline_process(corpus: Path, lake: Path) -> dict:
    shutil.rmtree(lake, ignore_errors=True)
    sources = (f"ingest.sources=[{{kind: tree, path: '{corpus}', layout: repos}}, "
               f"{{kind: git, path: '{REPO}', name: codemill}}]")
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--set", f"lakehouse={lake}", "--set", sources]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peaks = Peaks(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    memory = peaks.stop()
    if proc.returncode:
        raise SystemExit(f"codemill run failed:\n{err[-3000:]}")
    from deltalake import DeltaTable

    ledger = DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    stages = {}
    for r in ledger:
        mb = r["bytes_in"] / 1e6
        stages[r["stage"]] = {"seconds": r["seconds"], "rows_in": r["rows_in"],
                              "rows_out": r["rows_out"], "mb_in": round(mb, 1),
                              "mb_per_s_per_core": round(mb / max(r["seconds"], 1e-9) / CORES, 2)}
    mb_in = stages["ingest"]["mb_in"]
    return {"wall_seconds": round(wall, 1), "mb_in": mb_in,
            "mb_per_s_per_core": round(mb_in / wall / CORES, 3),
            "stage_seconds_total": round(sum(s["seconds"] for s in stages.values()), 1),
            "stages": stages, "peak_rss": memory}


def bare_parse(lake: Path) -> dict:
    """tree-sitter's parse alone over silver.unique_files' files with a grammar, one process."""
    from bench.split_speed import load
    from udfs.syntax import _parser, grammar_name

    rows = load(str(lake), None)
    seconds = 0.0
    total = 0
    for r in rows:
        source = r["text"].encode()
        parser = _parser(grammar_name(r["language"], r["path"]))
        started = time.perf_counter()
        parser.parse(source)
        seconds += time.perf_counter() - started
        total += len(source)
    return {"files": len(rows), "mb": round(total / 1e6, 1), "seconds": round(seconds, 1),
            "mb_per_s_per_core": round(total / 1e6 / seconds, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--scales", default="1,2,4")
    ap.add_argument("--edit-rate", type=float, default=0.1)
    ap.add_argument("--out", default="bench/results/pipeline.json")
    args = ap.parse_args()
    corpus = Path(args.corpus).resolve()
    if not corpus.is_dir():
        raise SystemExit(f"{corpus}: no corpus (make corpus builds it)")
    results = {"machine": machine(), "edit_rate": args.edit_rate, "sizes": []}
    for factor in [int(x) for x in args.scales.split(",")]:
        folder = scaled_corpus(corpus, factor, args.edit_rate)
        lake = REPO / f"bench/.pipeline-lake-{factor}x"
        row = {"scale": factor, **run_pipeline_process(folder, lake)}
        if factor == 1:
            split = row["stages"]["split"]
            parse = bare_parse(lake)
            row["split_vs_bare_parse"] = {
                "bare_parse": parse, "split_stage_mb_per_s_per_core": split["mb_per_s_per_core"],
                "split_share_of_parse_speed": round(
                    split["mb_per_s_per_core"] / parse["mb_per_s_per_core"], 3)}
        results["sizes"].append(row)
        print(json.dumps(row, indent=2), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        if factor != 1:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The whole pipeline's throughput and memory, as a user runs it, and how they grow with the input.

For each size, ``codemill run`` in a fresh process (Spark's start included, default config: every
stage of conf/pipeline.yaml, report.html and the MLflow run) on a fresh lakehouse:

- **1×** is the make-run corpus (``data/corpus``, ``codemill corpus``) and this repository's git
  history, as ``make run`` reads them.
- **k×** adds k − 1 copies of every repository of the corpus, each code file of copy j edited at
  ``--edit-rate`` (``bench._common.edit``: each line, with that probability, deleted, duplicated
  elsewhere or with an identifier renamed; seeded by repository and copy): distinct content that
  is near, not exactly, duplicate, as forks are. The git history is the same at every size.

Reported per size: wall seconds and MB/s per core end to end (MB = bytes of the files ingest read,
from its ledger row); per stage its ledger seconds, MB in and MB/s per core; peak resident memory
of the driver's Python process, of the JVM (driver and executors: local mode), and of the Python
workers (their largest sum at one moment, and the largest one), read from /proc every 0.2 s.

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
from udfs.languages import language_for_path  # noqa: E402

CORES = os.cpu_count() or 1


def enlarge(corpus: Path, out: Path, scale: int, rate: float) -> dict:
    """Write the N× corpus; returns its file and byte counts."""
    if out.exists():
        shutil.rmtree(out)
    files = size = 0
    for repo in sorted(p for p in corpus.iterdir() if p.is_dir()):
        for k in range(scale):
            target = out / (repo.name if k == 0 else f"{repo.name}__copy{k}")
            rng = random.Random(f"{repo.name}-{k}")
            for path in sorted(repo.rglob("*")):
                if not path.is_file() or path.is_symlink():
                    continue
                dest = target / path.relative_to(repo)
                dest.parent.mkdir(parents=True, exist_ok=True)
                data = path.read_bytes()
                if k and language_for_path(path.name):
                    try:
                        data = edit(data.decode("utf-8"), rate, rng).encode("utf-8")
                    except UnicodeDecodeError:
                        pass
                dest.write_bytes(data)
                files += 1
                size += len(data)
    return {"files": files, "bytes": size}


def _tree(root: int) -> dict[int, tuple[str, int]]:
    """pid → (kind, rss bytes) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/status") as f:
                rss = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        pid = int(entry)
        children.setdefault(ppid, []).append(pid)
        kind = ("jvm" if "java" in cmd.split(" ")[0] else
                "python_workers" if "pyspark.daemon" in cmd or "pyspark.worker" in cmd else
                "driver" if pid == root else "other")
        info[pid] = (kind, rss)
    out, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
        stack.extend(children.get(pid, []))
    return out



def sample_peaks(pid: int, stop: threading.Event, peaks: dict[str, int],
                 interval: float = 0.2) -> None:
    """Until ``stop``: the largest RSS seen of each kind of process under ``pid`` (summed per
    kind), of their total, and of the largest single Python worker."""
    while not stop.is_set():
        tree = _tree(pid).values()
        by_kind: dict[str, int] = {}
        for kind, rss in tree:
            by_kind[kind] = by_kind.get(kind, 0) + rss
        by_kind["total"] = sum(by_kind.values())
        by_kind["one_python_worker"] = max((rss for kind, rss in tree
                                            if kind == "python_workers"), default=0)
        for kind, rss in by_kind.items():
            peaks[kind] = max(peaks.get(kind, 0), rss)
        stop.wait(interval)


def run_pipeline_process(corpus: Path, lake: Path) -> dict:
    shutil.rmtree(lake, ignore_errors=True)
    sources = (f"ingest.sources=[{{kind: tree, path: '{corpus}', layout: repos}}, "
               f"{{kind: git, path: '{REPO}', name: codemill}}]")
    cmd = [str(Path(sys.executable).parent / "codemill"), "run", "--set", f"lakehouse={lake}",
           "--set", sources]
    peaks: dict[str, int] = {}
    stop = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    sampler = threading.Thread(target=sample_peaks, args=(proc.pid, stop, peaks), daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
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
            "stages": stages, "peak_rss_mb": {k: round(v / 2**20) for k, v in peaks.items()}}


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
    ap.add_argument("--edit-rate", type=float, default=0.05)
    ap.add_argument("--out", default="bench/results/pipeline.json")
    args = ap.parse_args()
    corpus = Path(args.corpus).resolve()
    if not corpus.is_dir():
        raise SystemExit(f"{corpus}: no corpus (make corpus builds it)")
    results = {"machine": machine(), "edit_rate": args.edit_rate, "sizes": []}
    for factor in [int(x) for x in args.scales.split(",")]:
        folder = corpus
        if factor > 1:
            folder = REPO / f"bench/.pipeline-corpus-{factor}x"
            row_corpus = enlarge(corpus, folder, factor, args.edit_rate)
        lake = REPO / f"bench/.pipeline-lake-{factor}x"
        row = {"scale": factor, **({"corpus": row_corpus} if factor > 1 else {}),
               **run_pipeline_process(folder, lake)}
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

"""The whole pipeline on the make-run corpus enlarged N×, with the default settings: does it run
on this machine, how long does each stage take, and how much memory do the driver, the JVM and
the Python workers peak at.

The enlarged corpus is the corpus N times over: copy 0 as it is, copy k > 0 of every repository
as ``<repo>__copy<k>`` with every code file edited at ``--edit-rate`` (line-level edits:
``bench/_common.edit``), so each copy is new content with near duplicates of the original, as
forks are. ``codemill run`` runs as a user runs it; a sampler reads the RSS of its whole process
tree from /proc every ``--interval`` seconds.

    python bench/load.py --corpus data/corpus --scale 4 --work /tmp/codemill-load
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--edit-rate", type=float, default=0.05)
    ap.add_argument("--work", default="/tmp/codemill-load")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--reuse", action="store_true", help="use the enlarged corpus already there")
    ap.add_argument("--out", default=str(REPO / "bench/results/load.json"))
    args = ap.parse_args()
    work = Path(args.work)
    corpus = work / f"corpus_{args.scale}x"
    start = time.perf_counter()
    if args.reuse and corpus.exists():
        paths = [p for p in corpus.rglob("*") if p.is_file()]
        sizes = {"files": len(paths), "bytes": sum(p.stat().st_size for p in paths)}
    else:
        sizes = enlarge(Path(args.corpus), corpus, args.scale, args.edit_rate)
    built = time.perf_counter() - start
    lake = work / "lakehouse"
    shutil.rmtree(lake, ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "codemill"), "run", "--set", f"lakehouse={lake}",
           "--set", f"ingest.sources=[{{kind: tree, path: '{corpus}', layout: repos}}]"]
    peaks: dict[str, int] = {}
    stop = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)

    def sample() -> None:
        while not stop.is_set():
            by_kind: dict[str, int] = {}
            for kind, rss in _tree(proc.pid).values():
                by_kind[kind] = by_kind.get(kind, 0) + rss
            by_kind["total"] = sum(by_kind.values())
            for kind, rss in by_kind.items():
                peaks[kind] = max(peaks.get(kind, 0), rss)
            stop.wait(args.interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    ledger = []
    if (lake / "ops" / "ledger").exists():
        from deltalake import DeltaTable

        ledger = [{k: r[k] for k in ("stage", "rows_in", "rows_out", "rows_dropped",
                                     "rows_quarantined", "bytes_in", "seconds")}
                  for r in DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()]
    result = {"machine": machine(), "scale": args.scale, "edit_rate": args.edit_rate,
              "corpus": sizes, "corpus_build_s": round(built, 1), "exit_code": proc.returncode,
              "wall_s": round(wall, 1), "peak_rss_mb": {k: round(v / 2**20) for k, v in
                                                        peaks.items()},
              "stages": ledger, "output_tail": output[-3000:]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "output_tail"}, indent=2))


if __name__ == "__main__":
    main()

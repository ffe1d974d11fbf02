"""Which of dedup's second code paths pay for themselves on the make-run corpus.

Runs ``codemill stage dedup`` as a user runs it (a fresh process, Spark's start included) on an
existing lakehouse (``make run`` builds one), once per configuration per round, the
configurations interleaved so that a slow minute of the machine hits each of them alike. Each
configuration turns one second path off (``--set dedup.tuning.<switch>=...``; ``--prefix`` for a config that keeps them elsewhere); the stage's own
seconds come from its ops.ledger row, the process's from the wall clock. After each run the
stage's three tables are checksummed (``jobs.catalog.table_checksum``): every configuration must
write the same rows.

    python bench/dedup_paths.py --lakehouse lakehouse --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import machine  # noqa: E402

CONFIGS: dict[str, list[str]] = {
    "default": [],
    "spark_reads": ["{p}direct_reads=false"],
    "spark_writes": ["{p}direct_writes=false"],
    "distributed": ["{p}one_task_files=0"],
    "shuffled_join": ["{p}broadcast_rows=0"],
    "all_off": ["{p}direct_reads=false", "{p}direct_writes=false",
                "{p}one_task_files=0",
                "{p}broadcast_rows=0"],
}
TABLES = ("silver.unique_files", "silver.dup_clusters", "silver.rejects")


def run_once(lakehouse: str, overrides: list[str], prefix: str) -> dict:
    from deltalake import DeltaTable

    from jobs.catalog import table_checksum

    cmd = [sys.executable, "-m", "jobs.cli", "stage", "dedup", "--set", f"lakehouse={lakehouse}"]
    for o in overrides:
        cmd += ["--set", o.format(p=prefix)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    ledger = DeltaTable(str(Path(lakehouse) / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    row = max((r for r in ledger if r["stage"] == "dedup" and not r["dry_run"]),
              key=lambda r: r["run_id"])  # run ids start with their UTC time
    sums = {}
    for t in TABLES:
        s = table_checksum(lakehouse, t, exclude=("stage",) if t == "silver.rejects" else ())
        sums[t] = s["sha256"]
    # only dedup's slice of silver.rejects: the other stages' rows do not change between runs
    return {"wall_s": round(wall, 2), "stage_s": row["seconds"], "checksums": sums}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lakehouse", default="lakehouse")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prefix", default="dedup.tuning.",
                    help="where the switches live in the config being measured")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--out", default=str(REPO / "bench/results/dedup_paths.json"))
    args = ap.parse_args()
    lake = str(Path(args.lakehouse).resolve())
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    # the first run creates the stage's tables (Spark writes them whatever the settings); not timed
    run_once(lake, [], args.prefix)
    for r in range(args.rounds):
        for c in args.configs:
            runs[c].append(run_once(lake, CONFIGS[c], args.prefix))
            print(f"round {r + 1} {c}: {runs[c][-1]['stage_s']:.1f} s stage, "
                  f"{runs[c][-1]['wall_s']:.1f} s process", flush=True)
    summary = {}
    for c, rs in runs.items():
        summary[c] = {"stage_s_median": statistics.median(x["stage_s"] for x in rs),
                      "wall_s_median": statistics.median(x["wall_s"] for x in rs),
                      "stage_s": [x["stage_s"] for x in rs],
                      "same_rows_as_default": all(x["checksums"] == runs[args.configs[0]][0]["checksums"]
                                                  for x in rs)}
    base = summary[args.configs[0]]["stage_s_median"]
    for c, s in summary.items():
        s["stage_vs_default"] = round(s["stage_s_median"] / base, 2)
        print(f"{c:24s} stage {s['stage_s_median']:6.1f} s ({s['stage_vs_default']:.2f}× default) "
              f"process {s['wall_s_median']:6.1f} s  same rows: {s['same_rows_as_default']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rounds": args.rounds,
                                          "summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Seconds each text rule takes on each pathological input (tests/hostile.PATHOLOGICAL) at 1 MB:
the figures behind tests/udfs/test_pathological.py's growth check.

    python bench/hostile_rules.py --size 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import machine  # noqa: E402
from tests.hostile import PATHOLOGICAL, text_rules  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(REPO / "bench/results/hostile_rules.json"))
    args = ap.parse_args()
    rules = text_rules()
    for rule in rules.values():
        rule("warm up x = 1\n")
    table: dict[str, dict[str, float]] = {}
    for kind, make in PATHOLOGICAL.items():
        text = make(args.size)
        for name, rule in rules.items():
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                rule(text)
                best = min(best, time.perf_counter() - start)
            table.setdefault(name, {})[kind] = round(best, 4)
    for name, row in table.items():
        worst = max(row, key=row.get)
        print(f"{name:28s} worst {row[worst]:7.3f} s on {worst}")
    Path(args.out).write_text(json.dumps({"machine": machine(), "size": args.size,
                                          "seconds": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Writing a table with long text to Delta, side by side: with Delta's default statistics (min/max
of the first 32 columns, ``text`` included: the baseline) and with ``jobs.lakehouse``'s
``delta.dataSkippingStatsColumns`` (every column but the long text), the way ``Lakehouse.write``
creates a table.

The input is silver.files of a lakehouse (``make run``), read once and held in memory, so that
both writes do the same work but for the statistics; each is repeated (``--repeat``) in
alternation and the medians count (this VM's speed drifts by a third from minute to minute).

    python bench/delta_write.py --lakehouse lakehouse
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, spark_session  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lakehouse", default="lakehouse", help="lakehouse with silver.files")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench/results/delta_write.json")
    args = ap.parse_args()

    from pyspark import StorageLevel

    from jobs.lakehouse import Lakehouse
    from jobs.schemas import stats_columns

    spark = spark_session()
    source, _ = Lakehouse(spark, args.lakehouse).read("silver.files")
    files = source.persist(StorageLevel.MEMORY_AND_DISK)
    rows = files.count()
    mb = files.agg({"size_bytes": "sum"}).first()[0] / 1e6
    columns = stats_columns(files.schema)
    tmp = Path(tempfile.mkdtemp(prefix="delta-write-"))

    def default(path: str) -> None:
        files.write.format("delta").mode("overwrite").save(path)

    def without_text(path: str) -> None:
        files.writeTo(f"delta.`{path}`").using("delta").tableProperty(
            "delta.dataSkippingStatsColumns", columns).create()

    runs: dict[str, list[float]] = {"default_stats": [], "no_text_stats": []}
    for i in range(args.repeat + 1):  # the first round warms the JVM and is not counted
        for name, write in (("default_stats", default), ("no_text_stats", without_text)):
            path = str(tmp / f"{name}-{i}")
            started = time.perf_counter()
            write(path)
            if i:
                runs[name].append(round(time.perf_counter() - started, 2))
            shutil.rmtree(path)
    files.unpersist()
    shutil.rmtree(tmp)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {"machine": machine(), "rows": rows, "mb": round(mb, 1), "stats_columns": columns,
              "runs": runs, "median_seconds": med,
              "speedup": round(med["default_stats"] / med["no_text_stats"], 2)}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run by tests/test_cluster.py under spark-submit on local-cluster: which executor JVM ran each
task, and where the Python workers imported ``udfs`` from. Prints one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import load_config  # noqa: E402
from jobs.session import spark_session  # noqa: E402


def where_am_i(batches):
    import os

    import pyarrow as pa

    import udfs.filters

    pid, executor = os.getpid(), None
    while pid > 1 and executor is None:  # python worker → daemon → executor JVM
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmd:
            executor = cmd[cmd.index(b"--executor-id") + 1].decode()
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    for _ in batches:
        yield pa.RecordBatch.from_pylist([{"executor": executor,
                                           "module": udfs.filters.__file__}])


if __name__ == "__main__":
    cfg = load_config(env="cluster", overrides=sys.argv[1:])
    spark = spark_session(cfg.spark)
    rows = (spark.range(0, 64, numPartitions=16)
            .mapInArrow(where_am_i, "executor string, module string").collect())
    print(json.dumps({"executors": sorted({r.executor for r in rows}),
                      "modules": sorted({r.module for r in rows})}))
    spark.stop()

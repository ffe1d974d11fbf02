"""Helpers shared by the dedup benchmarks: input tables, machine facts, a local Spark session."""

from __future__ import annotations

import os
import platform
import random
import re
import sys
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from udfs.records import file_id  # noqa: E402

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def read_silver(lakehouse: str) -> pa.Table:
    from deltalake import DeltaTable

    path = Path(lakehouse) / "silver" / "files"
    if not (path / "_delta_log").exists():
        raise SystemExit(f"{path} is not a Delta table: run `make run` first (ingest + filter)")
    return DeltaTable(str(path)).to_pyarrow_table()


def edit(text: str, rate: float, rng: random.Random) -> str:
    """Random line-level edits: each line, with probability ``rate``, is deleted, duplicated
    elsewhere, or has one identifier replaced."""
    lines = text.split("\n")
    out: list[str] = []
    for line in lines:
        if rng.random() >= rate:
            out.append(line)
            continue
        op = rng.choice(("delete", "duplicate", "rename"))
        if op == "duplicate":
            out.extend([line, rng.choice(lines)])
        elif op == "rename":
            words = _WORD.findall(line)
            out.append(line.replace(rng.choice(words), f"edited_{rng.randrange(10**6)}", 1)
                       if words else line)
    return "\n".join(out)


def with_rows(table: pa.Table, rows: list[dict]) -> pa.Table:
    return pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])


def planted_copy(row: dict, text: str, repo: str) -> dict:
    out = dict(row)
    out.update(repo=repo, text=text, size_bytes=len(text.encode()),
               id=file_id(repo, row["path"], text.encode()))
    return out


def write_silver(table: pa.Table, lakehouse: Path, spark) -> None:
    """silver.files as the filter stage leaves it: written by Spark through ``Lakehouse.write``
    (Delta's checksum file, the statistics property, Spark's file sizes) from a delta-rs staging
    copy. The staging copy alone (small files, no checksum) cost Delta more planning per query
    than the pipeline's own table does (bench/RESULTS.md, session 11)."""
    import shutil

    from deltalake import write_deltalake

    from jobs.lakehouse import Lakehouse

    staging = lakehouse / "_staging" / "files"
    write_deltalake(str(staging), table, mode="overwrite", schema_mode="overwrite",
                    target_file_size=4 << 20)
    Lakehouse(spark, str(lakehouse)).write(
        "silver.files", spark.read.format("delta").load(str(staging)))
    shutil.rmtree(staging.parent)


def spark_session():
    from jobs.config import load_config
    from jobs.session import spark_session as session

    cfg = load_config(env="local", overrides=["spark.master=local[2]"])
    return session(cfg.spark)

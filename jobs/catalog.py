"""Spark-free access to the lakehouse: list tables, export a table at a version.

Uses delta-rs (``deltalake``) and pyarrow, so ``codemill tables`` and ``codemill export`` start in
a second and run where no JVM is installed (a notebook, a training node).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jobs.lakehouse import Lakehouse, _is_uri
from jobs.schemas import TABLES


@dataclass(frozen=True)
class TableInfo:
    name: str
    path: str
    version: int
    rows: int
    description: str


def list_tables(root: str) -> list[TableInfo]:
    """Every Delta table under ``<root>/<layer>/<table>``, with its latest version and row count."""
    from deltalake import DeltaTable

    lake = Lakehouse(None, root)
    if _is_uri(lake.root):
        # Object stores cannot be globbed here: look up the tables codemill knows by name.
        candidates = [(n, lake.path(n)) for n in TABLES]
        candidates = [(n, p) for n, p in candidates if DeltaTable.is_deltatable(p)]
    else:
        candidates = [(f"{log.parent.parent.name}.{log.parent.name}", str(log.parent))
                      for log in sorted(Path(lake.root).glob("*/*/_delta_log"))]
    found = []
    for name, table_dir in candidates:
        dt = DeltaTable(table_dir)
        rows = dt.to_pyarrow_dataset().count_rows()
        found.append(TableInfo(name, table_dir, dt.version(), rows, TABLES.get(name, "")))
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chat_line(row: dict) -> dict:
    """A gold.sft row as the seed's JSONL record: ``{"messages": [...]}``."""
    from udfs.chatml import clean_messages

    return {"messages": clean_messages(row["messages"])}


def export_table(root: str, table: str, fmt: Literal["jsonl", "parquet"], out: str | Path,
                 version: int | None = None, rows_per_file: int = 100_000,
                 split: str | None = None) -> dict:
    """Write ``table`` at ``version`` (default: latest) as JSONL or Parquet shards under ``out``.

    Writes ``manifest.json`` beside the shards: table, path, Delta version, format, total rows and
    each shard's rows, bytes and SHA-256. Returns the manifest. gold.sft in JSONL is written as
    ``{"messages": [...]}`` per line (the chat format of ../shared/seeds/001 and 003); ``split``
    keeps only that split of gold.sft.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    path = Lakehouse(None, root).path(table)
    if not DeltaTable.is_deltatable(path):
        raise FileNotFoundError(f"no Delta table {table} at {path}")
    dt = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    chat = table == "gold.sft" and fmt == "jsonl"
    if split is not None and table != "gold.sft":
        raise ValueError("--split applies to gold.sft only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []

    def flush(batches: list[pa.RecordBatch]) -> None:
        if not batches:
            return
        shard = out / f"part-{len(shards):05d}.{fmt}"
        tbl = pa.Table.from_batches(batches)
        if fmt == "parquet":
            pq.write_table(tbl, shard)
        else:
            # map columns (gold.samples' spans) come out of Arrow as (key, value) pairs: write
            # them as JSON objects
            maps = [f.name for f in tbl.schema if pa.types.is_map(f.type)]
            with shard.open("w", encoding="utf-8") as f:
                for row in tbl.to_pylist():
                    if chat:
                        f.write(json.dumps(_chat_line(row), ensure_ascii=False) + "\n")
                        continue
                    for name in maps:
                        if row[name] is not None:
                            row[name] = dict(row[name])
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        shards.append({"file": shard.name, "rows": tbl.num_rows,
                       "bytes": shard.stat().st_size, "sha256": _sha256(shard)})

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    import pyarrow.dataset as ds

    dataset = dt.to_pyarrow_dataset()
    batches = dataset.to_batches(filter=ds.field("split") == split) if split else \
        dataset.to_batches()
    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= rows_per_file:
            flush(pending)
            pending, pending_rows = [], 0
    flush(pending)
    manifest = {
        "table": table, "path": path, "delta_version": dt.version(), "format": fmt,
        "split": split, "record_format": "chat messages" if chat else "table rows",
        "rows": sum(s["rows"] for s in shards), "files": shards,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _canonical(value):
    """A row value as JSON can hold it, the same whatever order Arrow gave a map's entries in."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # an Arrow map
            return sorted(([str(k), _canonical(v)] for k, v in value), key=lambda kv: kv[0])
        return [_canonical(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def table_checksum(root: str, table: str, version: int | None = None,
                   exclude: tuple[str, ...] = ()) -> dict:
    """A checksum of ``table``'s content at ``version`` (default latest) that ignores row order
    and file layout: the SHA-256 of the sorted SHA-256s of its rows (each row as canonical JSON,
    without the ``exclude`` columns). Two tables with the same rows have the same checksum,
    however they were partitioned or written. Returns table, version, rows, columns, sha256."""
    import pyarrow as pa
    from deltalake import DeltaTable

    path = Lakehouse(None, root).path(table)
    if not DeltaTable.is_deltatable(path):
        raise FileNotFoundError(f"no Delta table {table} at {path}")
    dt = DeltaTable(path, version=version) if version is not None else DeltaTable(path)
    dataset = dt.to_pyarrow_dataset()
    columns = sorted(n for n in dataset.schema.names if n not in exclude)
    digests = []
    for batch in dataset.to_batches(columns=columns):
        for row in pa.Table.from_batches([batch]).to_pylist():
            line = json.dumps({k: _canonical(v) for k, v in row.items()}, sort_keys=True,
                              ensure_ascii=False, default=str)
            digests.append(hashlib.sha256(line.encode("utf-8", "surrogatepass")).digest())
    digests.sort()
    return {"table": table, "version": dt.version(), "rows": len(digests), "columns": columns,
            "sha256": hashlib.sha256(b"".join(digests)).hexdigest()}

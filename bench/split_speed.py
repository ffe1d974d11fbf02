"""Split throughput against tree-sitter's bare parse speed on the same files (issue: split ≥ 50 %).

Per core, one process, the files of silver.unique_files (``make run`` writes it), each language
with a grammar:

- **bare parse** (the limit): ``Parser.parse(bytes)`` with the file's grammar, nothing else.
- **split**: ``udfs.split.split_file`` with the default ``SplitParams`` — the parse (through the
  progress callback that enforces the timeout), the depth bound, the definitions query, every sample
  and skip, FIM, fallback — what each executor task runs per file.

Each file is parsed bare and then split, ``--repeat`` times; the fastest of each per file counts
(pairs timed back to back, so the VM's drifting speed hits both sides alike). Ratio = split MB/s / bare-parse MB/s. Then, for scale, the whole ``split`` stage on Spark
local[2] (Arrow batches in and out, Delta writes of gold.samples and gold.sample_skips), MB/s per
core, in a warm session.

    python bench/split_speed.py --lakehouse lakehouse [--out bench/results/split_speed.json]

``--tree DIR`` (repeatable) benches source trees directly instead (no Spark): every file with one of
the eight languages' extensions under 512,000 bytes (the filter's size limit), at most
``--limit-mb`` per language. The stdlib + site-packages corpus is nearly all Python and C; RESULTS.md
adds Go, Java, TypeScript and Rust trees this way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine  # noqa: E402
from udfs.split import SplitParams, split_file  # noqa: E402
from udfs.syntax import _parser, grammar_name  # noqa: E402


def load(lakehouse: str, limit_mb: float | None) -> list[dict]:
    from deltalake import DeltaTable

    path = Path(lakehouse) / "silver" / "unique_files"
    if not (path / "_delta_log").exists():
        raise SystemExit(f"{path} is not a Delta table: run `make run` first")
    rows = DeltaTable(str(path)).to_pyarrow_table(
        columns=["id", "path", "language", "text"]).to_pylist()
    rows = sorted((r for r in rows if grammar_name(r["language"], r["path"])),
                  key=lambda r: r["id"])
    if limit_mb:
        out, total = [], 0
        for r in rows:
            total += len(r["text"].encode())
            if total > limit_mb * 1e6:
                break
            out.append(r)
        rows = out
    return rows


def load_trees(trees: list[str], limit_mb: float | None) -> list[dict]:
    from udfs.languages import language_for_path

    rows, per_lang = [], {}
    for tree in trees:
        for path in sorted(Path(tree).rglob("*")):
            language = language_for_path(path.name)
            if language is None or not path.is_file() or path.stat().st_size >= 512_000:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            gid = grammar_name(language, path.name)
            if limit_mb and per_lang.get(gid, 0) + len(text.encode()) > limit_mb * 1e6:
                continue
            per_lang[gid] = per_lang.get(gid, 0) + len(text.encode())
            rows.append({"id": str(path), "path": str(path), "language": language, "text": text})
    return rows


def timed_pairs(rows: list[dict], gid: str, params: SplitParams, repeat: int
                ) -> tuple[float, float, int]:
    """(bare parse seconds, split seconds, samples): each file parsed bare and then split, one
    right after the other, ``repeat`` times; the fastest time per file and side counts. Timing
    file by file in pairs keeps this VM's drifting speed (measured: ±25 % between minutes) out of
    the ratio."""
    parser = _parser(gid)
    parse_s = split_s = 0.0
    samples = 0
    for r in rows:
        source = r["text"].encode()
        best_parse = best_split = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            parser.parse(source)
            t1 = time.perf_counter()
            res = split_file(r["text"], r["language"], r["path"], r["id"], params)
            t2 = time.perf_counter()
            best_parse, best_split = min(best_parse, t1 - t0), min(best_split, t2 - t1)
        parse_s += best_parse
        split_s += best_split
        samples += len(res.samples)
    return parse_s, split_s, samples


def spark_stage(lakehouse: str) -> dict:
    from bench._common import spark_session
    from jobs.config import load_config
    from jobs.runner import run_pipeline

    spark = spark_session()
    cfg = load_config(env="local", overrides=[f"lakehouse={lakehouse}", "spark.master=local[2]"])
    times = []
    for _ in range(2):  # the first run warms the session (Python workers, grammar loading)
        started = time.perf_counter()
        [report] = run_pipeline(cfg, ["split"], spark=spark).reports
        times.append(time.perf_counter() - started)
    spark.stop()
    mb = report.bytes_in / 1e6
    return {"files": report.rows_in, "mb": round(mb, 2), "samples": report.output_rows,
            "seconds_cold": round(times[0], 2), "seconds_warm": round(times[1], 2),
            "mb_per_s_per_core_warm": round(mb / times[1] / 2, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lakehouse", default="lakehouse")
    ap.add_argument("--limit-mb", type=float, help="use only the first N MB of files (by id)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--tree", action="append", help="bench a source tree instead (no Spark)")
    ap.add_argument("--out", default="bench/results/split_speed.json")
    args = ap.parse_args()

    rows = load_trees(args.tree, args.limit_mb) if args.tree else load(args.lakehouse,
                                                                         args.limit_mb)
    params = SplitParams()
    by_lang: dict[str, list[dict]] = {}
    for r in rows:
        by_lang.setdefault(grammar_name(r["language"], r["path"]), []).append(r)
    result = {"machine": machine(), "params": "SplitParams() defaults", "languages": {}}
    total = {"mb": 0.0, "parse_s": 0.0, "split_s": 0.0, "files": 0, "samples": 0}
    for gid, group in sorted(by_lang.items()):
        mb = sum(len(r["text"].encode()) for r in group) / 1e6
        parse_s, split_s, samples = timed_pairs(group, gid, params, args.repeat)
        row = {"files": len(group), "mb": round(mb, 2), "samples": samples,
               "bare_parse_mb_s": round(mb / parse_s, 2), "split_mb_s": round(mb / split_s, 2),
               "split_over_parse": round(parse_s / split_s, 3)}
        result["languages"][gid] = row
        print(f"{gid:11s} {len(group):6d} files {mb:8.2f} MB  parse {row['bare_parse_mb_s']:6.2f}"
              f" MB/s  split {row['split_mb_s']:6.2f} MB/s  ratio {row['split_over_parse']:.3f}"
              f"  samples {samples}")
        total["mb"] += mb
        total["parse_s"] += parse_s
        total["split_s"] += split_s
        total["files"] += len(group)
        total["samples"] += samples
    result["all"] = {
        "files": total["files"], "mb": round(total["mb"], 2), "samples": total["samples"],
        "bare_parse_mb_s": round(total["mb"] / total["parse_s"], 2),
        "split_mb_s": round(total["mb"] / total["split_s"], 2),
        "split_over_parse": round(total["parse_s"] / total["split_s"], 3)}
    print("all        ", json.dumps(result["all"]))
    if args.tree:
        result["input"] = args.tree
    elif not args.no_spark:
        result["spark_stage_local2"] = spark_stage(args.lakehouse)
        print("spark stage", json.dumps(result["spark_stage_local2"]))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Ingest on real Spark and Delta: every source row lands in exactly one place."""

from __future__ import annotations

import json
import multiprocessing
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from jobs.arrow import arrow_schema
from jobs.ingest import DECIDED_SCHEMA, _decide_tree_files, listing_row
from jobs.runner import run_pipeline
from tests.conftest import make_config
from udfs.records import file_id
from udfs.trees import walk_repo

GOOD = {"text": "def f():\n    return 1\n", "language": "Python", "license": "MIT", "stars": 120,
        "path": "src/f.py", "repo": "acme/tools"}


def rows(lakehouse: str, table: str, columns: list[str]) -> list[tuple]:
    t = DeltaTable(f"{lakehouse}/{table.replace('.', '/')}").to_pyarrow_table(columns=columns)
    return sorted(zip(*(t[c].to_pylist() for c in columns)), key=repr)


def test_jsonl_malformed_lines_are_quarantined_with_payload(spark, lakehouse, tmp_path):
    src = tmp_path / "stack" / "part-0.jsonl"
    src.parent.mkdir()
    lines = [
        json.dumps(GOOD),
        "{broken json",
        json.dumps({**GOOD, "stars": "lots", "path": "b.py"}),
        json.dumps({k: v for k, v in GOOD.items() if k != "text"}),
        "",
        json.dumps({**GOOD, "path": "src/g.py", "license": None, "stars": None}),
    ]
    src.write_text("\n".join(lines) + "\n")
    cfg = make_config(lakehouse, f"ingest.sources=[{{kind: jsonl, path: '{src.parent}'}}]")
    result = run_pipeline(cfg, ["ingest"], spark=spark)

    [report] = result.reports
    assert (report.rows_in, report.rows_out, report.dropped, report.rows_quarantined) == (
        6, 2, {"blank_line": 1}, 3)
    assert rows(lakehouse, "bronze.files", ["id", "path", "language", "license", "stars"]) == sorted([
        (file_id("acme/tools", "src/f.py", GOOD["text"].encode()), "src/f.py", "python", "mit",
         120),
        (file_id("acme/tools", "src/g.py", GOOD["text"].encode()), "src/g.py", "python", None,
         None),
    ], key=repr)
    quarantined = rows(lakehouse, "ops.quarantine", ["stage", "source_kind", "payload", "error"])
    assert [(q[0], q[1], q[2]) for q in quarantined] == sorted(
        [("ingest", "jsonl", lines[1]), ("ingest", "jsonl", lines[2]),
         ("ingest", "jsonl", lines[3])], key=repr)
    errors = sorted(q[3].split(":")[0] for q in quarantined)
    assert errors == ["malformed_json", "missing_field", "mistyped_field"]
    # each names its file and line (1-based, blank lines counted)
    assert rows(lakehouse, "ops.quarantine", ["source"]) == [
        (f"file:{src}:{n}",) for n in (2, 3, 4)]
    [blank] = rows(lakehouse, "silver.rejects", ["reason", "detail"])
    assert blank == ("blank_line", json.dumps({"source_kind": "jsonl", "source": f"file:{src}:5"},
                                              separators=(",", ":")))


def test_parquet_corrupt_file_and_mistyped_column(spark, lakehouse, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "path": "src/h.py"}]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{**GOOD, "stars": "12"}]), folder / "b.parquet")
    (folder / "c.parquet").write_bytes(b"PAR1 this is not a parquet file")
    cfg = make_config(lakehouse, f"ingest.sources=[{{kind: parquet, path: '{folder}'}}]")
    [report] = run_pipeline(cfg, ["ingest"], spark=spark).reports

    assert (report.rows_in, report.rows_out, report.rows_quarantined) == (4, 2, 2)
    errors = rows(lakehouse, "ops.quarantine", ["source", "error"])
    assert errors[0] == (f"file:{folder / 'b.parquet'}#row=0",
                         "mistyped_field: stars should be int, got str")
    assert errors[1][0] == f"file:{folder / 'c.parquet'}"
    assert errors[1][1].startswith("unreadable_parquet: ")
    assert rows(lakehouse, "bronze.files", ["path"]) == [("src/f.py",), ("src/h.py",)]


def test_tree_invalid_utf8_and_binary_are_quarantined(spark, lakehouse, tmp_path):
    repo = tmp_path / "trees" / "demo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "LICENSE").write_text("Apache License\nVersion 2.0, January 2004\n")
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "ok.py").write_text("# é\nx = 1\n")
    (repo / "pkg" / "latin1.py").write_bytes(b"# caf\xe9\nx = 1\n")
    (repo / "pkg" / "blob.c").write_bytes(b"\x00\x01\x02binary")
    (repo / "README.md").write_text("# demo\n")
    cfg = make_config(lakehouse, f"ingest.sources=[{{kind: tree, path: '{tmp_path / 'trees'}'}}]")
    [report] = run_pipeline(cfg, ["ingest"], spark=spark).reports

    assert (report.rows_in, report.rows_out, report.rows_quarantined) == (6, 2, 2)
    assert report.dropped == {"unsupported_extension": 2}
    assert rows(lakehouse, "bronze.files", ["repo", "path", "language", "license", "stars",
                                            "size_bytes", "id"]) == sorted([
        ("demo", "pkg/__init__.py", "python", "apache-2.0", None, 0,
         file_id("demo", "pkg/__init__.py", b"")),
        ("demo", "pkg/ok.py", "python", "apache-2.0", None, 11,
         file_id("demo", "pkg/ok.py", "# é\nx = 1\n".encode())),
    ], key=repr)
    assert [e for _, e in rows(lakehouse, "ops.quarantine", ["source", "error"])] == [
        "binary_file: NUL byte in the first 8 KiB",
        "invalid_utf8: invalid continuation byte at byte 5",
    ]
    rejects = rows(lakehouse, "silver.rejects", ["stage", "reason", "path"])
    assert rejects == [("ingest", "unsupported_extension", "LICENSE"),
                       ("ingest", "unsupported_extension", "README.md")]
    # a tree file's source is the file itself, not the tree it was found in
    assert [s for s, _ in rows(lakehouse, "ops.quarantine", ["source", "error"])] == [
        str(repo / "pkg" / "blob.c"), str(repo / "pkg" / "latin1.py")]


def _become_nobody() -> None:
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


def _list_and_decide(repo: str, schema: pa.Schema) -> list[dict]:
    """The tree's listing (the driver's part) and its files read (the executors' part). Whatever
    it imports is imported before the fork: ``nobody`` may not read this Python's files."""
    listing = [listing_row(f) for f in walk_repo("repo", Path(repo))]
    batch = pa.RecordBatch.from_pylist(listing)
    [out] = list(_decide_tree_files(100, 2**26, schema)(iter([batch])))
    return out.to_pylist()


def test_a_file_or_folder_the_job_cannot_read_is_quarantined_naming_it(spark):  # DDL parsing
    """Run as a user without permission (root reads a mode-000 file, so the listing and the
    executor function run in a child that became ``nobody``): the file, and the folder that
    cannot be listed, are quarantined with the OS's reason and their own paths; the readable
    neighbour is kept."""
    folder = Path(tempfile.mkdtemp(prefix="codemill-unreadable-"))
    try:
        repo = folder / "repo"
        repo.mkdir()
        for d in (folder, repo):
            d.chmod(0o755)
        (repo / "open.py").write_text("y = 2\n")
        (repo / "open.py").chmod(0o644)
        (repo / "secret.py").write_text("x = 1\n")
        (repo / "secret.py").chmod(0)
        (repo / "locked").mkdir()
        (repo / "locked" / "inside.py").write_text("z = 3\n")
        (repo / "locked").chmod(0)
        become = _become_nobody if os.geteuid() == 0 else None
        with multiprocessing.get_context("fork").Pool(1, initializer=become) as pool:
            got = {r["path"]: r for r in pool.apply(
                _list_and_decide, (str(repo), arrow_schema(DECIDED_SCHEMA)))}
        assert got["open.py"]["_outcome"] == "kept" and got["open.py"]["text"] == "y = 2\n"
        assert got["secret.py"]["_outcome"] == "quarantined"
        assert got["secret.py"]["_reason"] == "unreadable_file: Permission denied"
        assert got["secret.py"]["source"] == str(repo / "secret.py")
        assert got["locked"]["_outcome"] == "quarantined"
        assert got["locked"]["_reason"] == "unreadable_dir: Permission denied"
        assert set(got) == {"open.py", "secret.py", "locked"}
    finally:
        (folder / "repo" / "locked").chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)

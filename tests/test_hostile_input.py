"""``codemill run`` on a corpus of hostile inputs (tests/hostile.py): the job exits 0, every input
ends kept, dropped with its named reason or quarantined with an error and a source that names its
file (and line or row), and every ledger row balances."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests import hostile

BIN = Path(sys.executable).parent


def rows(lake: Path, table: str, columns=None) -> list[dict]:
    path = lake / table.replace(".", "/")
    return DeltaTable(str(path)).to_pyarrow_table(columns=columns).to_pylist()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    cases = hostile.build(root)
    lake = root / "lakehouse"
    done = subprocess.run(
        [str(BIN / "codemill"), "run", "--set", f"lakehouse={lake}", "--set",
         hostile.sources(root), "--set", "spark.master=local[2]"],
        cwd=root, capture_output=True, text=True, timeout=900)
    return root, cases, lake, done


def outcome(case: hostile.Case, root: Path, quarantine, rejects, kept) -> tuple:
    """(stage, outcome, reason) of the one row that decided ``case``; ('kept',) if it reached
    silver.unique_files; ('lost',) if no table mentions it."""
    names = {case.source} if case.source else set()
    if case.path:
        names |= {f"{case.repo}/{case.path}",
                  str(root / "tree" / hostile.TREE_REPO / case.path)}
    found = [("quarantined", r["stage"], r["error"]) for r in quarantine if r["source"] in names]
    found += [("dropped", r["stage"], r["reason"]) for r in rejects
              if (case.path and (r["repo"], r["path"]) == (case.repo, case.path))
              or (case.source and json.loads(r["detail"] or "{}").get("source") == case.source)]
    if len(found) > 1:
        return ("decided twice", found)
    if found:
        what, stage, reason = found[0]
        return (stage, what, reason.split(":")[0])
    return ("kept",) if (case.repo, case.path) in kept else ("lost",)


def test_the_run_exits_0_and_balances(run):
    _, _, lake, done = run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout
    ledger = rows(lake, "ops.ledger")
    assert {r["stage"] for r in ledger} == {"ingest", "filter", "dedup", "split", "commits",
                                            "chats", "build_sft"}
    for r in ledger:
        assert r["rows_in"] == r["rows_out"] + r["rows_dropped"] + r["rows_quarantined"], r
        assert sum(v for _, v in r["dropped"]) == r["rows_dropped"]


def test_every_hostile_input_reaches_its_named_outcome(run):
    root, cases, lake, done = run
    assert done.returncode == 0, done.stderr[-3000:]
    assert len({c.kind for c in cases}) >= 25
    quarantine = rows(lake, "ops.quarantine")
    rejects = rows(lake, "silver.rejects", ["stage", "reason", "repo", "path", "detail"])
    kept = {(r["repo"], r["path"]) for r in rows(lake, "silver.unique_files", ["repo", "path"])}
    got = {c: outcome(c, root, quarantine, rejects, kept) for c in cases}
    want = {c: ("kept",) if c.stage is None else (c.stage, c.outcome, c.reason) for c in cases}
    wrong = {f"{c.kind} ({c.path or c.source})": (got[c], want[c]) for c in cases
             if got[c] != want[c]}
    assert not wrong


def test_quarantine_rows_name_the_file_and_line_or_row(run):
    root, _, lake, done = run
    assert done.returncode == 0, done.stderr[-3000:]
    records = f"file:{root / 'records'}/"
    for r in rows(lake, "ops.quarantine"):
        if r["source_kind"] == "jsonl" and r["error"].startswith(hostile.NOT_UTF8):
            assert r["source"].startswith(records) and r["source"].endswith(".jsonl"), r
        elif r["source_kind"] == "jsonl":  # <file>:<line>
            file, _, line = r["source"].rpartition(":")
            assert file.startswith(records) and ".jsonl" in file and line.isdigit(), r
        elif r["source_kind"] == "parquet":
            assert r["source"].startswith((f"file:{root / 'parquet'}/",
                                           f"file:{root / 'stack_v1'}/python/")), r
            assert r["source"].endswith(".parquet") or "#row=" in r["source"], r
        elif r["source_kind"] == "tree":
            assert Path(r["source"]).is_relative_to(root / "tree" / hostile.TREE_REPO), r
        else:  # a later stage: the file's repo/path
            assert r["source"].count("/") >= 1, r


def test_utf16_utf32_and_byte_columns_are_decoded_to_their_text(run):
    root, _, lake, done = run
    assert done.returncode == 0, done.stderr[-3000:]
    texts = {r["path"]: r["text"] for r in rows(lake, "silver.unique_files", ["path", "text"])}
    for path, seed in (("utf16_bom.py", 1), ("utf16_no_bom.py", 2), ("utf32_bom.py", 3),
                       ("utf32_no_bom.py", 4), ("pq_44.py", 44)):
        assert texts[path] == hostile.good_code(seed), path
    assert texts["dir with space/naïve ünïcode.py"] == hostile.good_code(8)


def test_names_in_bytes_keep_their_file_under_an_escaped_name(run):
    """A tree's file and a commit's file whose names are not UTF-8, a colon or a newline: the
    contents kept whole, the name with each byte that is not UTF-8 written as ``\\xNN``."""
    root, _, lake, done = run
    assert done.returncode == 0, done.stderr[-3000:]
    texts = {r["path"]: r["text"] for r in rows(lake, "silver.unique_files", ["path", "text"])}
    assert {name: texts.get(name) for name in ("latin1_caf\\xe9.py", "folder_\\xff/inner.py",
                                               "at 10:00:00.py", "new\nline.py")} == {
        "latin1_caf\\xe9.py": hostile.good_code(11), "folder_\\xff/inner.py": hostile.good_code(12),
        "at 10:00:00.py": hostile.good_code(13), "new\nline.py": hostile.good_code(14)}
    [commit] = [r for r in rows(lake, "silver.commits") if r["subject"] == hostile.GIT_SUBJECT]
    files = {f["path"]: f for f in commit["files"]}
    assert sorted(files) == ["a.py", "caf\\xe9.py"]
    assert files["caf\\xe9.py"]["status"] == "added"
    assert files["caf\\xe9.py"]["diff"].startswith("--- /dev/null\n+++ b/caf\\xe9.py\n")

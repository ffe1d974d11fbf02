"""A corpus of hostile inputs, built on the fly (nothing checked in), with the outcome each must
reach in a full run: kept, dropped with a named reason, or quarantined with an error and a
``source`` that names the file (and line or row).

``build(root)`` writes the sources under ``root`` (a source tree, JSONL files, Parquet folders,
chat exports, git repositories) and returns the ``Case`` list. ``Case.where`` says how to find the input in the tables:
by (repo, path) for files, by the source string for records that never get a path.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TREE_REPO = "hostile"
JSONL_REPO = "jsonrepo"


@dataclass(frozen=True)
class Case:
    kind: str  # what is hostile about it
    path: str | None  # repo path (files and records with one); None: found by ``source``
    repo: str | None
    stage: str | None  # where it stops; None: kept to the end (silver.unique_files)
    outcome: str | None  # "dropped" | "quarantined" | None (kept)
    reason: str | None  # the reason / error's prefix (before ':')
    source: str | None = None  # ops.quarantine / rejects' source, exactly


def good_code(seed: int, lines: int = 24) -> str:
    """Ordinary Python that passes every filter; distinct per seed (no dedup between cases)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda_"]
    out = [f'"""Module {seed}: helpers for the {rng.choice(words)} pipeline."""', ""]
    for i in range(lines // 4):
        a, b = rng.sample(words, 2)
        out += [f"def {a}_{b}_{seed}_{i}(value, factor={rng.randint(2, 99)}):",
                f"    total = value * factor + {rng.randint(0, 999)}",
                f"    return total if total > {rng.randint(0, 50)} else {b}_default(value)", ""]
    return "\n".join(out) + "\n"


def nested(language: str, depth: int = 10_000) -> str:
    """A call nested ``depth`` deep, wrapped to 80-column lines, inside a valid shell of the
    language: passes the filters (mostly letters, short lines) and reaches the parser. The
    callee is named after the language, so no two of these are near duplicates."""
    opening = f"{language}_call(" * depth
    closing = ")" * depth
    body = "\n".join(opening[i:i + 80] for i in range(0, len(opening), 80)) + "1" + "\n".join(
        closing[i:i + 80] for i in range(0, len(closing), 80))
    shell = {"python": "x = {}\n", "javascript": "var x = {};\n",
             "c": "int main(void) {{\n  return {};\n}}\n",
             "java": "class Nested {{\n  int x = {};\n}}\n"}[language]
    return shell.format(body)


# file name → good_code seed; the names Spark's JVM cannot open are the ones not UTF-8
NAMES_IN_BYTES = {b"latin1_caf\xe9.py": 11, b"folder_\xff/inner.py": 12,
                  b"at 10:00:00.py": 13, b"new\nline.py": 14}
NOT_UTF8 = "unreadable_path"


def escaped(raw: bytes) -> str:
    """A name as the tables show it: each byte that is not UTF-8 as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def _tree(root: Path) -> list[Case]:
    repo = root / "tree" / TREE_REPO
    (repo / "dir with space").mkdir(parents=True)
    (repo / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of charge, to "
                                  "any person obtaining a copy of this software\n")
    cases: list[Case] = []

    def put(path: str, data: bytes | str, stage, outcome, reason, kind) -> None:
        full = repo / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        cases.append(Case(kind, path, TREE_REPO, stage, outcome, reason))

    put("invalid_utf8.py", b"x = 1\n# caf\xe9 \xff\xfe\n", "ingest", "quarantined",
        "invalid_utf8", "invalid UTF-8")
    put("utf16_bom.py", good_code(1).encode("utf-16"), None, None, None, "UTF-16 with BOM")
    put("utf16_no_bom.py", good_code(2).encode("utf-16-le"), None, None, None, "UTF-16 without BOM")
    put("utf32_bom.py", good_code(3).encode("utf-32"), None, None, None, "UTF-32 with BOM")
    put("utf32_no_bom.py", good_code(4).encode("utf-32-be"), None, None, None,
        "UTF-32 without BOM")
    put("nul_bytes.py", b"x = 1\n\x00\x01\x02\x03 packed\n" * 20, "ingest", "quarantined",
        "binary_file", "NUL bytes")
    put("empty.py", b"", "filter", "dropped", "too_few_lines", "empty file")
    put("whitespace_only.py", b"   \n\t\n\n      \n", "filter", "dropped", "too_few_lines",
        "whitespace-only file")
    # 50 MB: a line count far past max_lines decides first
    put("huge.py", b"value_7 = compute(7)\n" * 2_400_000, "filter", "dropped",
        "too_many_lines", "50 MB file")
    # 3 GiB, sparse (no disk): past ingest.max_file_bytes it is never read; read whole it would
    # exceed what one Arrow batch holds (2 GiB) and fail the run
    with open(repo / "giant.py", "wb") as f:
        f.truncate(3 * 2**30)
    cases.append(Case("a 3 GiB file", "giant.py", TREE_REPO, "ingest", "dropped",
                      "file_too_large"))
    put("one_line.js", "var a = [" + "1," * 1_000_000 + "];", "filter", "dropped",
        "too_few_lines", "a single 2 MB line")
    for lang, ext in (("python", "py"), ("javascript", "js"), ("c", "c"), ("java", "java")):
        put(f"nested.{ext}", nested(lang), "split", "quarantined", "too_deep",
            f"10,000 nested brackets ({lang})")
    put("minified.js", "\n".join("a=b+c;d=e*f;" * 250 for _ in range(12)) + "\n", "filter",
        "dropped", "too_many_long_lines", "minified JS")
    blob = base64.encodebytes(random.Random(5).randbytes(3000)).decode()
    put("base64_blob.py", good_code(5) + f'DATA = """\n{blob}"""\n', "filter", "dropped",
        "encoded_data", "base64 blob in code")
    hexes = [f"0x{b:02x}" for b in random.Random(6).randbytes(600) if b >= 0xA0][:400]
    rows = ",\n    ".join(", ".join(hexes[i:i + 12]) for i in range(0, len(hexes), 12))
    put("hex_blob.py", good_code(6, 8) + f"BLOB = [\n    {rows},\n]\n", "filter", "dropped",
        "encoded_data", "hex blob in code")
    put("generated_pb2.py", "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n"
        + good_code(7), "filter", "dropped", "autogenerated", "autogenerated file")
    put("dir with space/naïve ünïcode.py", good_code(8), None, None, None,
        "path with spaces and non-ASCII")
    # names as the file system keeps them, in bytes: not UTF-8 (a Latin-1 name, a folder), a
    # colon, a newline; each kept, named with its odd bytes escaped (NAMES_IN_BYTES)
    for raw, seed in NAMES_IN_BYTES.items():
        full = os.path.join(os.fsencode(repo), raw)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(good_code(seed).encode())
        cases.append(Case("a file name in bytes", escaped(raw), TREE_REPO, None, None, None))
    # links: a loop, one to nowhere, one out of the tree, and a FIFO (reading it would block)
    os.symlink("loop_b.py", repo / "loop_a.py")
    os.symlink("loop_a.py", repo / "loop_b.py")
    cases += [Case("symlink loop", p, TREE_REPO, "ingest", "dropped", "symlink_loop")
              for p in ("loop_a.py", "loop_b.py")]
    os.symlink("does/not/exist.py", repo / "dangling.py")
    cases.append(Case("dangling symlink", "dangling.py", TREE_REPO, "ingest", "dropped",
                      "broken_symlink"))
    outside = root / "outside_secret.py"
    outside.write_text(good_code(9))
    os.symlink(outside, repo / "outside.py")
    cases.append(Case("symlink out of the tree", "outside.py", TREE_REPO, "ingest", "dropped",
                      "symlink_outside_tree"))
    os.mkfifo(repo / "fifo.py")
    cases.append(Case("FIFO named like code", "fifo.py", TREE_REPO, "ingest", "dropped",
                      "not_a_regular_file"))
    if os.geteuid() != 0:  # root reads a mode-000 file; tests/jobs/test_hostile runs it as nobody
        put("unreadable.py", good_code(10), "ingest", "quarantined", "unreadable_file",
            "unreadable file")
        (repo / "unreadable.py").chmod(0)
    return cases


def _record(seed: int, **fields) -> dict:
    return {"text": good_code(seed), "language": "python", "license": "mit", "stars": 500,
            "path": f"rec_{seed}.py", "repo": JSONL_REPO, **fields}


def _jsonl(root: Path) -> list[Case]:
    path = root / "records" / "hostile.jsonl"
    path.parent.mkdir(parents=True)
    src = f"file:{path}"  # as Spark's _metadata.file_path names it
    lines: list[tuple[bytes, Case | None]] = []

    def line(data: bytes | str | dict, case: Case | None) -> None:
        if isinstance(data, dict):
            data = json.dumps(data)
        lines.append((data.encode() if isinstance(data, str) else data, case))

    def quarantined(reason: str, kind: str) -> Case:
        return Case(kind, None, None, "ingest", "quarantined", reason,
                    f"{src}:{len(lines) + 1}")

    line(_record(20), Case("valid record", "rec_20.py", JSONL_REPO, None, None, None))
    line('{"text": "x = 1", "language": "pyth', quarantined("malformed_json", "truncated JSON"))
    line("[1, 2, 3]", quarantined("not_an_object", "JSON array instead of an object"))
    line('"just a string"', quarantined("not_an_object", "JSON scalar instead of an object"))
    line({k: v for k, v in _record(21).items() if k != "text"},
         quarantined("missing_field", "missing field"))
    line(_record(22, stars="many"), quarantined("mistyped_field", "mistyped field"))
    line(_record(23, text=None), quarantined("missing_field", "null field"))
    line(json.dumps(_record(24, text="SURROGATE = 1\n" + good_code(24))).replace(
        "SURROGATE", "\\ud800", 1), quarantined("invalid_text", "lone surrogate"))
    line(json.dumps(_record(25)).replace('"stars": 500', '"stars": ' + "9" * 40),
         quarantined("out_of_range", "integer beyond 64 bits"))
    line(_record(26, stars=-3), quarantined("out_of_range", "negative stars"))
    line(_record(27, license="wtfpl-9"), Case("unknown license", "rec_27.py", JSONL_REPO,
                                                "filter", "dropped", "license_not_allowed"))
    line(_record(28, language="brainfuck"), Case("unknown language", "rec_28.py", JSONL_REPO,
                                                   None, None, None))
    line("", Case("blank line", None, None, "ingest", "dropped", "blank_line",
                  f"{src}:{len(lines) + 1}"))
    line(b'{"text": "caf\xe9", "language": "python", "path": "x.py", "repo": "r"}',
         quarantined("invalid_utf8", "invalid UTF-8 inside a JSON line"))
    line("[" * 100_000 + "]" * 100_000, quarantined("malformed_json", "JSON nested 100,000 deep"))
    line(_record(29, text="x = '" + "a" * 2_000_000 + "'\n"),
         Case("a 2 MB line in a record", "rec_29.py", JSONL_REPO, "filter", "dropped",
              "too_few_lines"))
    path.write_bytes(b"\n".join(data for data, _ in lines) + b"\n")
    # a timestamped export: Hadoop's checksummed local file system could not open this name
    stamped = path.parent / "export-2026-12-06T10:00:00.jsonl"
    stamped.write_text(json.dumps(_record(30)) + "\n{oops\n")
    # Spark's own locator for it is URL-encoded (my%20export+v2%20100%25.jsonl)
    spaced = path.parent / "my export+v2 100%.jsonl"
    spaced.write_text("{oops\n" + json.dumps(_record(32)) + "\n")
    # a dump laid out by language: Spark's folder listing alone would skip the sub-folder
    (path.parent / "python").mkdir()
    (path.parent / "python" / "part-0.jsonl").write_text(json.dumps(_record(34)) + "\n")
    # compressed: read whole by one task each; one breaks off (a copy cut short)
    packed = path.parent / "part-1.jsonl.zst"
    with pa.output_stream(str(packed), compression="zstd") as f:
        f.write(json.dumps(_record(35)).encode() + b"\n{oops\n")
    cut = path.parent / "part-2.jsonl.gz"
    with pa.output_stream(str(cut), compression="gzip") as f:
        f.write((json.dumps(_record(36)) + "\n").encode() * 50)
    cut.write_bytes(cut.read_bytes()[:-40])
    (path.parent / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(_record(33)).encode()
                                            + b"\n")
    latin1 = os.path.join(os.fsencode(path.parent), b"caf\xe9.jsonl")
    with open(latin1, "wb") as f:
        f.write(json.dumps(_record(31)).encode() + b"\n")
    return [case for _, case in lines if case is not None] + [
        Case("a record in a file named with colons", "rec_30.py", JSONL_REPO, None, None, None),
        Case("a bad line in a file named with colons", None, None, "ingest", "quarantined",
             "malformed_json", f"file:{stamped}:2"),
        Case("a JSONL file whose name is not UTF-8", None, None, "ingest", "quarantined",
             NOT_UTF8, f"file:{escaped(latin1)}"),
        Case("a record in a file named with a space, + and %", "rec_32.py", JSONL_REPO, None,
             None, None),
        Case("a record after a UTF-8 byte-order mark", "rec_33.py", JSONL_REPO, None, None, None),
        Case("a record in a sub-folder", "rec_34.py", JSONL_REPO, None, None, None),
        Case("a record in a zstd-compressed file", "rec_35.py", JSONL_REPO, None, None, None),
        Case("a bad line in a zstd-compressed file", None, None, "ingest", "quarantined",
             "malformed_json", f"file:{packed}:2"),
        Case("a gzip file cut short", None, None, "ingest", "quarantined", "corrupt_file",
             f"file:{cut}:1"),
        Case("a bad line in a file named with a space, + and %", None, None, "ingest",
             "quarantined", "malformed_json", f"file:{spaced}:1")]


def _parquet(root: Path) -> list[Case]:
    (root / "parquet_none").mkdir()  # a source with nothing in it yet: no rows, no failure
    folder = root / "parquet"
    folder.mkdir()
    good = pa.Table.from_pylist([_record(40, path="pq_40.py", repo="pqrepo"),
                                 _record(41, path="pq_41.py", repo="pqrepo")])
    pq.write_table(good, folder / "good.parquet")
    pq.write_table(good, folder / "whole.parquet")
    data = (folder / "whole.parquet").read_bytes()
    (folder / "whole.parquet").unlink()
    (folder / "truncated.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.Table.from_pylist([{"content": good_code(42), "lang": "python"},
                                         {"content": good_code(43), "lang": "python"}]),
                   folder / "wrong_schema.parquet")
    uri = f"file:{folder / 'truncated.parquet'}"
    wrong = f"file:{folder / 'wrong_schema.parquet'}"
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.parquet")
    with open(latin1, "wb") as f:
        pq.write_table(good, f)
    # code stored as bytes: read as UTF-8 (not as JSON's base64 of it), or quarantined
    as_bytes = [_record(44, path="pq_44.py", repo="pqrepo"),
                _record(45, path="pq_45.py", repo="pqrepo")]
    texts = [as_bytes[0]["text"].encode(), b"caf\xe9 = 1\n" + as_bytes[1]["text"].encode()]
    pq.write_table(pa.Table.from_pylist(as_bytes).set_column(
        0, "text", pa.array(texts, pa.binary())), folder / "binary_text.parquet")
    binary = f"file:{folder / 'binary_text.parquet'}"
    return [
        Case("code as Parquet bytes", "pq_44.py", "pqrepo", None, None, None),
        Case("code as Parquet bytes, not UTF-8", None, None, "ingest", "quarantined",
             "invalid_utf8", f"{binary}#row=1"),
        Case("a Parquet file whose name is not UTF-8", None, None, "ingest", "quarantined",
             NOT_UTF8, f"file:{escaped(latin1)}"),
        Case("valid Parquet rows", "pq_40.py", "pqrepo", None, None, None),
        Case("valid Parquet rows", "pq_41.py", "pqrepo", None, None, None),
        Case("truncated Parquet file", None, None, "ingest", "quarantined", "unreadable_parquet",
             uri),
        *[Case("Parquet file with a wrong schema", None, None, "ingest", "quarantined",
               "missing_field", f"{wrong}#row={i}") for i in range(2)],
    ]


# The Stack v1's column names, mapped to the seed's fields by the source's ``columns``
STACK_V1_COLUMNS = ("{text: content, language: lang, repo: max_stars_repo_name, "
                    "path: max_stars_repo_path, stars: max_stars_count, "
                    "license: max_stars_repo_licenses}")


def _stack_v1(root: Path) -> list[Case]:
    """Another corpus's Parquet: its own column names, licenses as lists, NaN for no stars."""
    folder = root / "stack_v1" / "python"  # laid out by language: read through the sub-folder
    folder.mkdir(parents=True)

    def row(seed: int, licenses: list[str], stars: float, content: str | None = "") -> dict:
        return {"hexsha": f"{seed:040x}", "content": good_code(seed) if content == "" else content,
                "lang": "Python", "max_stars_repo_name": "screpo",
                "max_stars_repo_path": f"sc_{seed}.py", "max_stars_count": stars,
                "max_stars_repo_licenses": licenses}

    pq.write_table(pa.Table.from_pylist([
        row(50, ["MIT", "Apache-2.0"], 150.0), row(51, ["BSD-3-Clause"], float("nan")),
        row(52, ["MIT", "GPL-3.0"], 900.0), row(53, ["MIT"], 5000.0, content=None)]),
        folder / "part-0.parquet")
    # a Hive-style partitioned dataset: the language is the folder's, not a column
    hive = root / "parquet_hive" / "language=python"
    hive.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in _record(
        54, path="hv_54.py", repo="hvrepo").items() if k != "language"}]), hive / "part-0.parquet")
    return [
        Case("a partition column as the language", "hv_54.py", "hvrepo", None, None, None),
        Case("another corpus's columns, two licenses", "sc_50.py", "screpo", None, None, None),
        Case("another corpus's NaN star count", "sc_51.py", "screpo", None, None, None),
        Case("another corpus's row with a license not allowed among its licenses", "sc_52.py",
             "screpo", "filter", "dropped", "license_not_allowed"),
        Case("another corpus's row without its text column", None, None, "ingest",
             "quarantined", "missing_field", f"file:{folder / 'part-0.parquet'}#row=3"),
    ]


def _chats(root: Path) -> list[Case]:
    """Chat exports: a JSONL file with a hostile record per line, and a binary file."""
    folder = root / "chats"
    folder.mkdir()
    path = folder / "hostile.jsonl"
    lines: list[tuple[bytes, Case | None]] = []
    ok = [{"role": "user", "content": "Reverse a list in Python?"},
          {"role": "assistant", "content": "Use `xs[::-1]`."}]

    def line(data, case_kind: str | None, outcome: str = "quarantined", reason: str = "",
             ) -> None:
        data = json.dumps(data) if isinstance(data, dict) else data
        n = len(lines) + 1
        case = None
        if case_kind and outcome == "quarantined":
            case = Case(case_kind, None, None, "chats", outcome, reason, f"{path}:{n}")
        elif case_kind:  # dropped: silver.rejects names the record in ``path``
            case = Case(case_kind, f"{path}:{n}", None, "chats", outcome, reason)
        lines.append((data.encode() if isinstance(data, str) else data, case))

    line({"messages": ok}, None)
    line('{"messages": [{"role": "user", "content": "unterminated', "truncated chat JSON",
         reason="invalid_json")
    line('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", "chat JSON nested 100,000 deep",
         reason="invalid_json")
    line(json.dumps({"messages": ok}).replace("Reverse", "\\ud800", 1),
         "lone surrogate in a chat", reason="invalid_text")
    line(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', "invalid UTF-8 in a chat line",
         reason="invalid_utf8")
    line({"messages": [{"role": "wizard", "content": "?"}, *ok]}, "unknown chat role",
         reason="unknown_role")
    line({"messages": [ok[0], {"role": "assistant", "content": ""}]}, "empty answer",
         "dropped", "empty_answer")
    line({"messages": [ok[0], {"role": "assistant", "content": "x" * 2_000_000}]}, None)
    path.write_bytes(b"\n".join(data for data, _ in lines) + b"\n")
    blob = folder / "blob.json"
    blob.write_bytes(bytes(range(128, 256)) * 64)  # binary, no newline: one line, not UTF-8
    stamped = folder / "chat-2026-12-06T10:00:00.jsonl"
    stamped.write_text(json.dumps({"messages": ok[::-1]}) + "\n")
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.jsonl")
    with open(latin1, "wb") as f:
        f.write(json.dumps({"messages": ok}).encode() + b"\n")
    return [case for _, case in lines if case is not None] + [
        Case("a chat file named with colons", f"{stamped}:1", None, "chats", "dropped",
             "one_sided"),
        Case("a chat file whose name is not UTF-8", None, None, "chats", "quarantined", NOT_UTF8,
             escaped(latin1)),
        Case("a binary file among chat exports", None, None, "chats", "quarantined",
             "invalid_utf8", f"{blob}:1")]


GIT_SUBJECT = "Count returned items and add the Latin-1 module"


def _git(root: Path) -> list[Case]:
    """A folder of repositories: one that is not a repository, and one whose commit
    ``GIT_SUBJECT`` changes ``a.py`` and adds a file whose name is not UTF-8."""
    folder = root / "git" / "notarepo"
    folder.mkdir(parents=True)
    (folder / "a.py").write_text(good_code(60))
    repo = root / "git" / "bytes"
    repo.mkdir()

    def git(*args: str | bytes) -> None:
        subprocess.run(["git", "-c", "user.name=A Tester", "-c", "user.email=tester@example.org",
                        *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    (repo / "a.py").write_text(good_code(61))
    git("add", "-A")
    git("commit", "-qm", "Add the counter module with its helpers")
    (repo / "a.py").write_text(good_code(61).replace("return", "return 1 +", 1))
    with open(os.path.join(os.fsencode(repo), b"caf\xe9.py"), "wb") as f:
        f.write(good_code(62).encode())
    git("add", "-A")
    git("commit", "-qm", GIT_SUBJECT)
    return [Case("a folder that is not a git repository", None, None, "commits", "quarantined",
                 "unreadable_repository", str(folder))]


def build(root: Path) -> list[Case]:
    """Write the hostile sources under ``root`` and return every case."""
    return (_tree(root) + _jsonl(root) + _parquet(root) + _stack_v1(root) + _chats(root)
            + _git(root))


def sources(root: Path) -> str:
    """The ``ingest.sources`` override for ``build``'s sources (one a folder with no files)."""
    return (f"ingest.sources=[{{kind: tree, path: '{root / 'tree'}', layout: repos}}, "
            f"{{kind: jsonl, path: '{root / 'records'}'}}, "
            f"{{kind: parquet, path: '{root / 'parquet'}'}}, "
            f"{{kind: parquet, path: '{root / 'parquet_none'}'}}, "
            f"{{kind: parquet, path: '{root / 'stack_v1'}', columns: {STACK_V1_COLUMNS}}}, "
            f"{{kind: parquet, path: '{root / 'parquet_hive'}'}}, "
            f"{{kind: chat, path: '{root / 'chats'}'}}, "
            f"{{kind: git, path: '{root / 'git'}', layout: repos}}]")


# --- pathological input for every text rule ---------------------------------------------------
# Each input is built to keep a regex or a scan near a match for as long as possible: a run that
# never terminates the pattern, a prefix repeated, nothing but separators.
PATHOLOGICAL: dict[str, object] = {
    "one letter repeated (base64-like run)": lambda n: "A" * n,
    "hex pairs without 0x": lambda n: "ab, " * (n // 4),
    "0x repeated": lambda n: "0x" * (n // 2),
    "unicode escape prefixes": lambda n: "\\u00" * (n // 4),
    "e-mail prefixes": lambda n: "a@" * (n // 2),
    "dotted digits": lambda n: "1." * (n // 2),
    "colons (IPv6-like)": lambda n: "a:" * (n // 2),
    "unterminated password literal": lambda n: "password = '" + "x" * n,
    "URL userinfo without a host": lambda n: "https://" + "a" * n + ":",
    "JWT prefix without parts": lambda n: "eyJ" + "A" * n + ".",
    "private key without an END line": lambda n: "-----BEGIN PRIVATE KEY-----\n" + "QUJD" * (n // 4),
    "trailing whitespace": lambda n: " " * n + "x",
    "empty lines": lambda n: "\n" * n,
    "one long line": lambda n: "x" * n,
    "keyword lines": lambda n: "token = x\n" * (n // 10),
}


def text_rules() -> dict[str, object]:
    """Every rule that scans a file's text, as ``name → f(text)``: the filter rules, the
    secret finder, decontamination, and dedup's hashing kernels."""
    import numpy as np

    from udfs import filters
    from udfs.decontam import Decontaminator, load_humaneval
    from udfs.minhash import content_hashes, shingle_hashes
    from udfs.redaction import find_secrets

    params = filters.FilterParams()

    def filter_rule(rule):
        return lambda t: rule(filters.Doc(t, "python", "mit", 500), params)

    rules = {f"filter.{name}": filter_rule(rule) for name, rule in filters.RULES.items()}
    rules["filter.quality_signals"] = lambda t: filters.quality_signals(filters.Doc(t))
    rules["redaction.find_secrets"] = find_secrets
    matcher = Decontaminator(load_humaneval())
    rules["decontam.check"] = matcher.check

    def utf8(t):
        data = np.frombuffer(t.encode(), np.uint8)
        return data, np.array([0, len(data)])

    rules["minhash.content_hashes"] = lambda t: content_hashes(*utf8(t))
    rules["minhash.shingle_hashes"] = lambda t: shingle_hashes(*utf8(t))
    return rules

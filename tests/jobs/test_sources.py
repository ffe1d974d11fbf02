"""Git history and chat exports through the commits, chats and build_sft stages: exact rows and
reasons, no author data anywhere, both chat shapes, the mixture, gold.sft's source column."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from jobs.lakehouse import Lakehouse
from jobs.runner import run_pipeline
from jobs.split import SAMPLE_COLUMNS
from tests.conftest import make_config
from tests.gitrepo import PEOPLE, build
from tests.jobs.test_build_sft_stage import FILES_SCHEMA, files, samples_of

SYSTEM = "You help with Python."
ASK = "My script mails bob.marley@acme-widgets.io when stock is low. How do I test it?"
ANSWER = ("Patch the mailer:\n\n```python\nfrom unittest import mock\n\nwith mock.patch("
          "'shop.send') as send:\n    check_stock()\n    send.assert_called_once()\n```")
TOOL_ARGS = {"path": "inventory.py"}


def chat_files(root: Path) -> Path:
    """a.jsonl (OpenAI messages) and b.json (ShareGPT, one JSON array) with a known outcome per
    record."""
    folder = root / "chats"
    folder.mkdir()
    first = {"messages": [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": ASK},
                          {"role": "assistant", "content": ANSWER}]}
    tools = {"messages": [
        {"role": "user", "content": "What is in inventory.py?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "read_file", "arguments": json.dumps(TOOL_ARGS)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "class Inventory: ..."},
        {"role": "assistant", "content": "It defines the `Inventory` class."}]}
    lines = [json.dumps(first),                                                   # 1 kept
             json.dumps(tools),                                                   # 2 kept
             '{"messages": [{"role": "user", "content": "unterminated',          # 3 quarantined
             json.dumps(first),                                                   # 4 repeat
             json.dumps({"messages": [{"role": "user", "content": "Hello?"},
                                      {"role": "assistant", "content": ""}]}),   # 5 empty answer
             json.dumps({"messages": [{"role": "user", "content": "Anyone?"}]}),  # 6 one-sided
             "",                                                                  # 7 blank
             json.dumps({"text": "not a chat"})]                                  # 8 quarantined
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    sharegpt = [
        {"system": SYSTEM, "conversations": [{"from": "human", "value": ASK},
                                             {"from": "gpt", "value": ANSWER}]},  # = a.jsonl:1
        {"conversations": [{"from": "human", "value": "Sort a dict by value in Python?"},
                           {"from": "gpt", "value": "Use `sorted(d.items(), key=lambda kv: "
                                                    "kv[1])`."}]},                   # kept
        {"conversations": [{"from": "narrator", "value": "?"}]},                  # unknown role
    ]
    (folder / "b.json").write_text(json.dumps(sharegpt, indent=2))
    return folder


def table(lakehouse: str, name: str) -> list[dict]:
    return DeltaTable(f"{lakehouse}/{name.replace('.', '/')}").to_pyarrow_table().to_pylist()


@pytest.fixture
def sources(spark, lakehouse, tmp_path):
    """A lakehouse with code samples (gold.samples, silver.unique_files), two clones of the
    test repository under one folder, and the chat folder."""
    import pygit2

    rows = files()
    lake = Lakehouse(spark, lakehouse)
    lake.write("silver.unique_files", spark.createDataFrame(
        [tuple(r[c.split(" ")[0]] for c in FILES_SCHEMA.split(", ")) for r in rows],
        FILES_SCHEMA))
    cols = [c.split(" ")[0] for c in SAMPLE_COLUMNS.split(", ")]
    lake.write("gold.samples", spark.createDataFrame(
        [tuple(s.get(c) for c in cols) for s in samples_of(rows)], SAMPLE_COLUMNS))
    repos = tmp_path / "repos"
    repos.mkdir()
    path, expected, ids = build(repos)
    pygit2.clone_repository(str(path), str(repos / "shop-clone"))
    return repos, expected, ids, chat_files(tmp_path)


def overrides(repos: Path, chats: Path, *more: str) -> list[str]:
    return [f"ingest.sources=[{{kind: git, path: '{repos}', layout: repos}}, "
            f"{{kind: chat, path: '{chats}'}}]", "sft.augmentations=[]", *more]


def test_commits_chats_and_build_sft(spark, lakehouse, sources):
    repos, expected, ids, chats = sources
    cfg = make_config(lakehouse, *overrides(repos, chats, "sft.eval_fraction=0.5"))
    commits, chat, sft_report = run_pipeline(cfg, ["commits", "chats", "build_sft"],
                                             spark=spark).reports

    # commits: every commit of "shop" decided once; the clone's copies are duplicates
    kept = {oid for oid, reason in expected.items() if reason is None}
    reasons: dict[str, int] = {}
    for reason in expected.values():
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    assert (commits.rows_in, commits.rows_out, commits.rows_quarantined) == (22, len(kept), 0)
    assert commits.dropped == {**reasons, "duplicate_commit": 11}
    rows = {r["commit_id"]: r for r in table(lakehouse, "silver.commits")}
    assert set(rows) == kept and {r["repo"] for r in rows.values()} == {"shop"}
    rejects = {(r["id"], r["repo"]): r for r in table(lakehouse, "silver.rejects")
               if r["stage"] == "commits"}
    for oid, reason in expected.items():
        if reason:
            assert rejects[(oid, "shop")]["reason"] == reason
        assert rejects[(oid, "shop-clone")]["reason"] == "duplicate_commit"
        assert rejects[(oid, "shop-clone")]["detail"] == "first seen in shop"
    fixed = rows[ids["fix(stock): leave returns out of the total (#12)"]]
    assert fixed["subject"] == "Leave returns out of the total"
    assert fixed["message"] == ("Leave returns out of the total\n\nNegative quantities are "
                                "returns. Reported by <NAME> <<EMAIL>>.")
    [f] = fixed["files"]
    assert (f["path"], f["status"], f["language"]) == ("inventory.py", "modified", "python")
    assert "-        return sum(self.items.values())\n" in f["diff"]
    assert "+        return sum(q for q in self.items.values() if q > 0)\n" in f["diff"]
    assert "# negative quantities are returns; <NAME> asked" in f["hunks"][0]["after"]
    assert (fixed["lines_added"], fixed["lines_removed"]) == (2, 1)

    # chats: a.jsonl 1, 2 and b.json item 1 kept; the ShareGPT copy of a.jsonl:1 is a repeat
    a, b = chats / "a.jsonl", chats / "b.json"
    assert (chat.rows_in, chat.rows_out, chat.rows_quarantined) == (10, 3, 3)
    assert chat.dropped == {"duplicate_conversation": 2, "empty_answer": 1, "one_sided": 1}
    quarantine = {r["source"]: r["error"] for r in table(lakehouse, "ops.quarantine")
                  if r["stage"] == "chats"}
    assert set(quarantine) == {f"{a}:3", f"{a}:8", f"{b}#item=2"}
    assert quarantine[f"{a}:3"].startswith("invalid_json")
    assert quarantine[f"{a}:8"].startswith("unknown_shape")
    assert quarantine[f"{b}#item=2"] == "unknown_role: narrator"
    dropped = {r["path"]: r["reason"] for r in table(lakehouse, "silver.rejects")
               if r["stage"] == "chats"}
    assert dropped == {f"{a}:4": "duplicate_conversation", f"{b}#item=0": "duplicate_conversation",
                       f"{a}:5": "empty_answer", f"{a}:6": "one_sided"}
    convs = {r["source"]: r for r in table(lakehouse, "silver.chats")}
    assert set(convs) == {f"{a}:1", f"{a}:2", f"{b}#item=1"}
    assert [m["content"] for m in convs[f"{a}:1"]["messages"]] == [
        SYSTEM, ASK.replace("bob.marley@acme-widgets.io", "<EMAIL>"), ANSWER]
    assert dict(convs[f"{a}:1"]["redactions"]) == {"EMAIL": 1}
    assert convs[f"{a}:1"]["language"] == "python"
    call = convs[f"{a}:2"]["messages"][1]["tool_calls"][0]
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
        "read_file", TOOL_ARGS)

    # gold.sft: every source, a repository or a conversation on one side of the split
    sft = table(lakehouse, "gold.sft")
    by_source: dict[str, int] = {}
    for r in sft:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    assert by_source["git"] == len(kept) and by_source["chat"] == 3
    assert sft_report.source_rows_in == sft_report.source_rows_out == by_source
    git = [r for r in sft if r["source"] == "git"]
    assert {r["sample_id"] for r in git} == kept
    assert {r["task_type"] for r in git} <= {"commit_edit", "commit_diff"}
    assert {r["split"] for r in git} in ({"train"}, {"eval"})  # one repository: one side
    assert all(r["messages"][-1]["role"] == "assistant" for r in sft)
    fixed_sft = next(r for r in git if r["sample_id"] == fixed["commit_id"])
    assert "Leave returns out of the total" in fixed_sft["messages"][1]["content"]
    # nobody's name or e-mail reached any table
    root = Path(lakehouse)
    for folder in sorted({p.parent for p in root.rglob("_delta_log")}):
        name = ".".join(folder.relative_to(root).parts)
        blob = json.dumps(DeltaTable(str(folder)).to_pyarrow_table().to_pylist(), default=str)
        for person in PEOPLE:
            assert person.lower() not in blob.lower(), (name, person)


def test_a_commit_unreadable_in_the_first_clone_is_decided_in_the_next(spark):
    """The copy that could be read is the one decided: the first clone's read error must not make
    the commit a duplicate of nothing."""
    from jobs.commits import DECIDED_SCHEMA, _once

    cols = spark.createDataFrame([], DECIDED_SCHEMA).columns

    def row(oid, repo, outcome, reason=None, change=None):
        r = dict.fromkeys(cols)
        return {**r, "id": oid, "repo": repo, "source": f"/git/{repo}@{oid}", "_outcome": outcome,
                "_reason": reason, "change_key": change, "_bytes": 0 if change is None else 10}

    decided = spark.createDataFrame([tuple(r[c] for c in cols) for r in [
        row("x", "a", "quarantined", "commit_error: KeyError: 'blob'"),
        row("x", "b", "kept", change="k1"),
        row("x", "c", "kept", change="k1"),
        row("z", "a", "dropped", "merge_commit"),
        row("z", "b", "dropped", "merge_commit"),
        row("y", "a", "kept", change="k2"),
        row("w", "b", "kept", change="k2"),  # the same change under another id
    ]], DECIDED_SCHEMA)
    out = {(r["id"], r["repo"]): (r["_outcome"], r["_reason"], r["detail"])
           for r in _once(decided).collect()}
    assert out == {
        ("x", "a"): ("quarantined", "commit_error: KeyError: 'blob'", None),
        ("x", "b"): ("kept", None, None),
        ("x", "c"): ("dropped", "duplicate_commit", "first seen in b"),
        ("z", "a"): ("dropped", "merge_commit", None),
        ("z", "b"): ("dropped", "duplicate_commit", "first seen in a"),
        ("y", "a"): ("kept", None, None),
        ("w", "b"): ("dropped", "duplicate_change", "first seen in a"),
    }


def test_mixture_shares(spark, lakehouse, sources):
    repos, expected, _, chats = sources
    kept = sum(reason is None for reason in expected.values())  # 5 commits
    # before: code ≥ 10 records, git 5, chat 3. Shares .5/.3/.2 → chat allows 3/.2 = 15 rows,
    # git 5/.3 = 16.7, code more: the total is 15 → code 7 (7.5 rounded down), git 4 (4.5), chat 3
    cfg = make_config(lakehouse, *overrides(repos, chats,
                                            "sft.mixture={code: 0.5, git: 0.3, chat: 0.2}"))
    *_, report = run_pipeline(cfg, ["commits", "chats", "build_sft"], spark=spark).reports
    assert report.source_rows_in["git"] == kept and report.source_rows_in["chat"] == 3
    assert report.source_rows_in["code"] >= 10
    assert report.source_rows_out == {"code": 7, "git": 4, "chat": 3}
    sft = table(lakehouse, "gold.sft")
    counts = {s: sum(r["source"] == s for r in sft) for s in ("code", "git", "chat")}
    assert counts == {"code": 7, "git": 4, "chat": 3}
    # the highest-quality records stay; the cut ones are in gold.sft_skips as mixture
    git_dropped = [r for r in table(lakehouse, "gold.sft_skips") if r["reason"] == "mixture"
                   and r["source_task"] == "commit"]
    assert len(git_dropped) == 1
    # a unit (sample, commit, conversation) left without any record is dropped as mixture: here
    # one record per unit (no augmentations), so every cut record is one such unit
    cut = report.source_rows_in["code"] - 7 + kept - 4
    assert report.dropped == {"mixture": cut}
    assert report.rows_out == 14


def chat_outcomes(lakehouse: str) -> dict[str, tuple[str, str | None]]:
    """source → (outcome, reason or error) of every record the chats stage decided."""
    out = {r["source"]: ("kept", None) for r in table(lakehouse, "silver.chats")}
    out.update({r["source"]: ("quarantined", r["error"]) for r in table(lakehouse, "ops.quarantine")
                if r["stage"] == "chats"})
    out.update({r["path"]: ("dropped", r["reason"]) for r in table(lakehouse, "silver.rejects")
                if r["stage"] == "chats"})
    return out


def test_large_chat_files_are_streamed_with_the_outcomes_of_whole_ones(spark, tmp_path):
    """Over chats.whole_file_bytes, JSONL is read line by line across tasks and a JSON array item
    by item: every record gets the outcome and the locator it gets when its file is read whole."""
    chats = chat_files(tmp_path)
    a, b, c, d = (chats / n for n in ("a.jsonl", "b.json", "c 100%.jsonl", "d.json"))

    def conv(ask: str) -> dict:
        return {"messages": [{"role": "user", "content": ask},
                             {"role": "assistant", "content": f"Answer to {ask}"}]}

    # a BOM, CRLF ends, a blank line and a line that is not UTF-8
    c.write_bytes(b"\xef\xbb\xbf" + json.dumps(conv("Why CRLF?")).encode() + b"\r\n\r\n"
                  + b'{"messages": "caf\xe9"}\r\n' + json.dumps(conv("And BOMs?")).encode())
    # an array with a lone surrogate in its third item that breaks off in its fourth
    d.write_text("[" + json.dumps(conv("First?")) + ",\n " + json.dumps(conv("Second?"))
                 + ",\n " + json.dumps(conv("Third \ud800?"))
                 + ',\n {"messages": [{"role": "user", "cont')
    # compressed: decompressed in a task of their own, whole or streamed as the limit says
    e, f = chats / "e.jsonl.gz", chats / "f.json.zst"
    e.write_bytes(gzip.compress(b"\xef\xbb\xbf" + json.dumps(conv("Gzip?")).encode()
                                + b"\r\n{bad\n" + json.dumps(conv("Zipped?")).encode() + b"\n"))
    with pa.output_stream(str(f), compression="zstd") as out:
        out.write(json.dumps([conv("Zstd?"), 7]).encode())
    outcomes = {}
    for limit in (2**26, 1):  # every file whole; every file streamed
        lake = str(tmp_path / f"lake-{limit}")
        cfg = make_config(lake, f"ingest.sources=[{{kind: chat, path: '{chats}'}}]",
                          f"chats.whole_file_bytes={limit}")
        [report] = run_pipeline(cfg, ["chats"], spark=spark).reports
        outcomes[limit] = (report, chat_outcomes(lake))
    (whole, by_whole), (streamed, by_line) = outcomes[2**26], outcomes[1]
    assert by_line[f"{d}#item=0"] == by_line[f"{d}#item=1"] == ("kept", None)
    assert by_line[f"{d}#item=2"] == ("quarantined", "invalid_text: turn 0: surrogates not "
                                                     "allowed at 6")
    assert by_line[f"{d}#item=3"][0] == "quarantined"
    assert by_line[f"{d}#item=3"][1].startswith("invalid_json: ")
    assert sum(str(k).startswith(str(d)) for k in by_line) == 4
    assert {k: v for k, v in by_line.items() if not k.startswith(str(d))} == {
        k: v for k, v in by_whole.items() if not k.startswith(str(d))}
    assert by_line[f"{c}:1"] == by_line[f"{c}:4"] == ("kept", None)
    # {"messages": "caf is bytes 0-16; é's lone lead byte is byte 17
    assert by_line[f"{c}:3"] == ("quarantined", "invalid_utf8: invalid continuation byte at "
                                                "byte 17")
    assert by_line[f"{a}:4"] == ("dropped", "duplicate_conversation")
    assert by_line[f"{b}#item=0"] == ("dropped", "duplicate_conversation")
    assert {k: v for k, v in by_line.items() if k.startswith((str(e), str(f)))} == {
        f"{e}:1": ("kept", None), f"{e}:2": ("quarantined", "invalid_json: Expecting property "
                                             "name enclosed in double quotes: line 1 column 2 "
                                             "(char 1)"),
        f"{e}:3": ("kept", None), f"{f}#item=0": ("kept", None),
        f"{f}#item=1": ("quarantined", "not_an_object: int")}
    # records: a.jsonl 7 (its blank line is none), b.json 3, c.jsonl 3, d.json 3 items and its
    # break; kept a:1, a:2, b#1, c:1, c:4, d#0, d#1; quarantined a:3, a:8, b#2, c:3, d#2, d#3
    # and e.jsonl.gz 3 (kept e:1, e:3; quarantined e:2), f.json.zst 2 (kept f#0, quarantined f#1)
    assert (streamed.rows_in, streamed.rows_out, streamed.rows_quarantined) == (22, 10, 8)
    # read whole, d.json is no JSON document: its 4 lines are read as JSONL, none a record
    assert (whole.rows_in, whole.rows_out, whole.rows_quarantined) == (22, 8, 10)

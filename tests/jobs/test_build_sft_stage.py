"""The build_sft stage on Spark: ledger, language cap, split, weights, token counts, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.catalog import export_table
from jobs.lakehouse import Lakehouse
from jobs.runner import run_pipeline
from jobs.split import SAMPLE_COLUMNS
from tests.conftest import make_config
from udfs.chatml import clean_messages, count_tokens, load_tokenizer, train_tokenizer
from udfs.instructions import Templates
from udfs.languages import language_for_path
from udfs.records import file_id
from udfs.sft import build_records, validate_tool_calls
from udfs.split import SplitParams, split_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "udfs" / "fixtures" / "split"
TEST_FILE = ("from inventory import Inventory\n\n\ndef test_total():\n    inv = Inventory()\n"
             "    inv.add('x', 2)\n    assert inv.total() == 2\n")
FILES_SCHEMA = ("id string, repo string, path string, language string, license string, "
                "stars long, text string, size_bytes long, alpha_fraction double, "
                "max_line_length long")


def files() -> list[dict]:
    out = []
    for p in sorted(FIXTURES.iterdir()):  # one repo per fixture; inventory.py has its test
        repo = "shop" if p.name == "inventory.py" else f"repo-{p.stem}"
        out.append((repo, p.name, p.read_text()))
    out.append(("shop", "tests/test_inventory.py", TEST_FILE))
    return [{"id": file_id(r, p, t.encode()), "repo": r, "path": p,
             "language": language_for_path(p), "license": "mit", "stars": 1, "text": t,
             "size_bytes": len(t.encode()), "alpha_fraction": 0.5 + 0.01 * i,
             "max_line_length": 60} for i, (r, p, t) in enumerate(out)]


def samples_of(rows: list[dict]) -> list[dict]:
    out = []
    params = SplitParams(fim_rate=1.0, max_samples_per_file=100)
    for f in rows:
        res = split_file(f["text"], f["language"], f["path"], f["id"], params)
        for s in res.samples:
            s.update(file_id=f["id"], repo=f["repo"], path=f["path"], language=f["language"],
                     parse_status=res.parse_status)
            out.append(s)
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tiny"
    return str(train_tokenizer([p.read_text() for p in FIXTURES.iterdir()], out, 600))


@pytest.fixture
def gold(spark, lakehouse):
    rows = files()
    lake = Lakehouse(spark, lakehouse)
    lake.write("silver.unique_files", spark.createDataFrame(
        [tuple(r[c.split(" ")[0]] for c in FILES_SCHEMA.split(", ")) for r in rows],
        FILES_SCHEMA))
    samples = samples_of(rows)
    cols = [c.split(" ")[0] for c in SAMPLE_COLUMNS.split(", ")]
    lake.write("gold.samples", spark.createDataFrame(
        [tuple(s.get(c) for c in cols) for s in samples], SAMPLE_COLUMNS))
    return lakehouse, rows, samples


def table(lakehouse: str, name: str) -> list[dict]:
    return DeltaTable(f"{lakehouse}/{name.replace('.', '/')}").to_pyarrow_table().to_pylist()


def test_build_sft_end_to_end(spark, gold, tokenizer, tmp_path):
    lakehouse, rows, samples = gold
    cfg = make_config(lakehouse, f"sft.tokenizer={tokenizer}", "sft.max_length=300",
                      "sft.max_per_language=4", "sft.language_caps={python: 6}",
                      "sft.eval_fraction=0.5")
    [report] = run_pipeline(cfg, ["build_sft"], spark=spark).reports
    templates = Templates.load(cfg.sft.templates_path())
    signals = {r["id"]: r for r in rows}
    # expected: each language keeps its top-quality samples (ties by sample id)
    quality = {}
    for s in samples:
        recs, _ = build_records(s, templates, signals[s["file_id"]])
        quality[s["sample_id"]] = (s["language"], recs[0]["quality"])
    by_lang: dict[str, list] = {}
    for sid, (lang, q) in quality.items():
        by_lang.setdefault(lang, []).append((-q, sid))
    keep = {sid for lang, items in by_lang.items()
            for _, sid in sorted(items)[:6 if lang == "python" else 4]}
    dropped = len(samples) - len(keep)
    assert (report.rows_in, report.rows_out, report.dropped, report.rows_quarantined) == (
        len(samples), len(keep), {"language_cap": dropped}, 0)

    sft = table(lakehouse, "gold.sft")
    assert report.output_rows == len(sft)
    assert {r["sample_id"] for r in sft} == keep
    assert {r["path"] for r in table(lakehouse, "silver.rejects")
            if r["reason"] == "language_cap"} <= {r["path"] for r in rows}
    # split by repo: never both; weights have mean 1 and follow exp(5(q - 0.7))
    splits: dict[str, set] = {}
    for r in sft:
        splits.setdefault(r["repo"], set()).add(r["split"])
    assert all(len(v) == 1 for v in splits.values())
    assert {"train", "eval"} == set().union(*splits.values())
    assert sum(r["weight"] for r in sft) / len(sft) == pytest.approx(1.0)
    a, b = sft[0], sft[-1]
    assert a["weight"] / b["weight"] == pytest.approx(2.718281828 ** (5 * (a["quality"]
                                                                           - b["quality"])))
    assert {r["source_version"] for r in sft} == {0}
    # chars: every message's content, tool calls' arguments not included
    for r in sft:
        assert r["chars"] == sum(len(m["content"] or "") for m in r["messages"])
    # token counts are the tokenizer's, run directly
    tok = load_tokenizer(tokenizer)
    for r in sft[:20]:
        assert r["token_count"] == count_tokens(tok, [r["messages"]])[0]
        assert r["truncated"] == (r["token_count"] > 300)
    stats = {(s["split"], s["language"], s["source"]): s
             for s in table(lakehouse, "gold.sft_token_stats")}
    counts = sorted(r["token_count"] for r in sft)
    # only code records here: the code source's row is the overall row
    for key in (("all", "all", "all"), ("all", "all", "code")):
        total = stats[key]
        assert (total["records"], total["max"]) == (len(sft), counts[-1])
        assert total["over_max_length"] == sum(c > 300 for c in counts)
    for split in ("train", "eval"):
        mine = [r["token_count"] for r in sft if r["split"] == split]
        assert stats[(split, "all", "code")]["records"] == len(mine)
        assert stats[(split, "all", "code")]["max"] == max(mine)
    assert {s for _, _, s in stats} == {"all", "code"}
    # the test file's function is paired with the function it calls, as a tool call
    tests = [r for r in sft if r["task_type"] == "write_tests"]
    assert tests and all(r["repo"] == "shop" for r in tests)
    for r in tests:
        calls = clean_messages(r["messages"])[-1]["tool_calls"]
        validate_tool_calls(calls)
        args = json.loads(calls[0]["function"]["arguments"])
        assert args["path"] == "tests/test_inventory.py"
        assert args["content"].startswith("def test_total():")

    # rerun: the same records in the same splits
    run_pipeline(cfg, ["build_sft"], spark=spark)
    again = table(lakehouse, "gold.sft")
    assert sorted((r["sft_id"], r["split"], r["weight"]) for r in again) == sorted(
        (r["sft_id"], r["split"], r["weight"]) for r in sft)

    # export: the seed's JSONL, which reloads into the table's messages
    manifest = export_table(lakehouse, "gold.sft", "jsonl", tmp_path / "jsonl", split="train")
    lines = [json.loads(line) for line in (tmp_path / "jsonl" / "part-00000.jsonl").open()]
    train = [r for r in again if r["split"] == "train"]
    assert manifest["rows"] == len(lines) == len(train)
    assert all(set(line) == {"messages"} for line in lines)
    assert sorted(json.dumps(line["messages"], sort_keys=True) for line in lines) == sorted(
        json.dumps(clean_messages(r["messages"]), sort_keys=True) for r in train)
    pq = export_table(lakehouse, "gold.sft", "parquet", tmp_path / "pq")
    assert pq["rows"] == len(again) and pq["files"][0]["sha256"]

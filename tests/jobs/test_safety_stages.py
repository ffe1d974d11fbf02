"""Data safety on Spark: the filter stage redacts secrets before dedup (so copies that differ only in
a secret collapse) and drops files that are mostly secrets; the split stage drops a file holding a
benchmark problem before any sample is cut, with an auditable detail."""

from __future__ import annotations

import json

from deltalake import DeltaTable

from jobs.runner import run_pipeline
from tests.conftest import make_config
from udfs.decontam import load_humaneval

BODY = "def handler(event, context):\n" + "    result = process(event, context)\n" * 15
TOKEN_A = "ghp_" + "R4nd0mT0k3nV4lu3" * 2 + "Abcd"
TOKEN_B = "ghp_" + "0th3rT0k3nV4lu3X" * 2 + "Wxyz"


def record(path: str, text: str) -> str:
    return json.dumps({"text": text, "language": "python", "license": "mit", "stars": 300,
                       "path": path, "repo": "acme/app"})


def rows(lakehouse: str, table: str) -> list[dict]:
    return DeltaTable(f"{lakehouse}/{table.replace('.', '/')}").to_pyarrow_table().to_pylist()


def test_redaction_before_dedup_and_mostly_secrets(spark, lakehouse, tmp_path):
    keys = "\n".join(f'K{i} = "{"ghp_" + f"{i:04d}" + "Zq8vR2mK9Lp3Xw7Tn6Yb4Hc5Jd1Fs0Ge"}"'
                     for i in range(40)) + "\n"
    src = tmp_path / "stack.jsonl"
    src.write_text("\n".join([
        record("a/config.py", f'TOKEN = "{TOKEN_A}"  # from ops@acme-corp.com\n' + BODY),
        record("b/config.py", f'TOKEN = "{TOKEN_B}"  # from ops@acme-corp.com\n' + BODY),
        record("clean.py", BODY + "# nothing secret here, see docs at example.com\n"),
        record("keys.py", keys),
    ]) + "\n")
    cfg = make_config(lakehouse, f"ingest.sources=[{{kind: jsonl, path: '{src}'}}]",
                      "filter.params.min_lines=1")
    ingest, filtered, dedup = run_pipeline(cfg, ["ingest", "filter", "dedup"],
                                           spark=spark).reports
    assert filtered.rows_in == 4 and filtered.dropped == {"mostly_secrets": 1}
    silver = {r["path"]: r for r in rows(lakehouse, "silver.files")}
    assert sorted(silver) == ["a/config.py", "b/config.py", "clean.py"]
    redacted = 'TOKEN = "<KEY>"  # from <EMAIL>\n' + BODY
    assert silver["a/config.py"]["text"] == silver["b/config.py"]["text"] == redacted
    assert dict(silver["a/config.py"]["redactions"]) == {"KEY": 1, "EMAIL": 1}
    assert silver["a/config.py"]["size_bytes"] == len(redacted.encode())
    assert dict(silver["clean.py"]["redactions"]) == {}
    # bronze keeps the raw text; the mostly-secret file's reject row does not carry its keys
    bronze = {r["path"]: r["text"] for r in rows(lakehouse, "bronze.files")}
    assert TOKEN_A in bronze["a/config.py"]
    [reject] = [r for r in rows(lakehouse, "silver.rejects") if r["stage"] == "filter"]
    assert reject["reason"] == "mostly_secrets" and "ghp_" not in reject["text"]
    # the two configs differed only in their token: after redaction they are one file
    assert dedup.dropped == {"exact_duplicate": 1}


def test_contaminated_files_never_reach_split(spark, lakehouse, tmp_path):
    he = load_humaneval()
    problem = he[2].prompt + he[2].solution  # HumanEval/2
    repo = tmp_path / "trees" / "demo"
    repo.mkdir(parents=True)
    (repo / "LICENSE").write_text("Permission is hereby granted, free of charge, to any person\n")
    (repo / "solutions.py").write_text("import math\n\n\n" + problem + "\n\nprint(1)\n")
    (repo / "app.py").write_text(BODY + "\n\ndef main():\n    return handler(None, None)\n")
    cfg = make_config(lakehouse, f"ingest.sources=[{{kind: tree, path: '{tmp_path / 'trees'}'}}]",
                      "filter.params.min_lines=1")
    reports = run_pipeline(cfg, ["ingest", "filter", "dedup", "split"], spark=spark).reports
    split = reports[-1]
    assert split.rows_in == 2 and split.dropped == {"contaminated": 1} and split.rows_out == 1
    samples = rows(lakehouse, "gold.samples")
    assert samples and {s["path"] for s in samples} == {"app.py"}
    [reject] = [r for r in rows(lakehouse, "silver.rejects") if r["stage"] == "split"]
    assert (reject["path"], reject["reason"]) == ("solutions.py", "contaminated")
    detail = json.loads(reject["detail"])
    assert (detail["benchmark"], detail["task_id"], detail["method"]) == (
        "humaneval", "HumanEval/2", "substring")
    assert detail["match"] in " ".join(problem.lower().split())
    # off: the same file is split
    cfg_off = make_config(lakehouse, f"ingest.sources=[{{kind: tree, path: '{tmp_path / 'trees'}'}}]",
                          "filter.params.min_lines=1", "decontam.enabled=false")
    [split_off] = run_pipeline(cfg_off, ["split"], spark=spark).reports
    assert split_off.dropped == {} and split_off.rows_out == 2

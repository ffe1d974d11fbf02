"""Reruns: a stage run again on the same inputs replaces its own outputs (the same rows, checked
by checksums of sorted rows) and adds one ledger row; the whole pipeline into a new lakehouse
writes the same content; a retried ledger append adds nothing."""

from __future__ import annotations

from deltalake import DeltaTable

from jobs.catalog import list_tables, table_checksum
from jobs.config import PipelineConfig
from jobs.lakehouse import Lakehouse
from jobs.ledger import append_ledger
from jobs.runner import run_pipeline
from tests.conftest import make_config
from tests.hostile import good_code

# every stage of a default run (commits and chats with no source of theirs: empty tables)
STAGES = list(PipelineConfig().stages)
# gold.sft's source_version is gold.samples' Delta version: a rerun of split makes a new one
VOLATILE = ("source_version",)


def corpus(root):
    """Two repos with a copied file, a near copy, a quarantined and a rejected file."""
    for repo, files in {
        "one": {"a.py": good_code(1), "b.py": good_code(2), "latin1.py": b"# caf\xe9\n",
                "tiny.py": "x = 1\n"},
        "two": {"a_copy.py": good_code(1), "b_near.py": good_code(2).replace("total", "tot", 1),
                "c.py": good_code(3)},
    }.items():
        folder = root / repo
        folder.mkdir(parents=True)
        (folder / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of "
                                        "charge, to any person obtaining a copy\n")
        for name, data in files.items():
            (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return f"ingest.sources=[{{kind: tree, path: '{root}', layout: repos}}]"


def content(lake: str) -> dict[str, str]:
    return {t.name: table_checksum(lake, t.name, exclude=VOLATILE)["sha256"]
            for t in list_tables(lake) if t.name != "ops.ledger"}


def ledger_rows(lake: str) -> int:
    return DeltaTable(f"{lake}/ops/ledger").to_pyarrow_dataset().count_rows()


def test_each_stage_rerun_replaces_its_outputs_and_a_new_lakehouse_gets_the_same(
        spark, tmp_path):
    sources = corpus(tmp_path / "corpus")
    first = str(tmp_path / "first")
    run_pipeline(make_config(first, sources), STAGES, spark=spark)
    before = content(first)
    sft_before = table_checksum(first, "gold.sft")["sha256"]  # source_version included
    assert {"bronze.files", "silver.unique_files", "silver.dup_clusters", "gold.samples",
            "gold.sft", "silver.rejects", "ops.quarantine"} <= set(before)
    assert ledger_rows(first) == len(STAGES)
    for n, stage in enumerate(STAGES, start=1):
        run_pipeline(make_config(first, sources), [stage], spark=spark)
        assert content(first) == before, stage
        assert ledger_rows(first) == len(STAGES) + n, stage  # one row per stage run, nothing else added

    second = str(tmp_path / "second")
    run_pipeline(make_config(second, sources), STAGES, spark=spark)
    assert content(second) == before
    # a fresh lakehouse's gold.sft names the same gold.samples version as the first run's did
    assert table_checksum(second, "gold.sft")["sha256"] == sft_before


def test_a_retried_ledger_append_adds_nothing(spark, lakehouse, tmp_path):
    sources = corpus(tmp_path / "corpus")
    result = run_pipeline(make_config(lakehouse, sources), ["ingest"], spark=spark)
    lake = Lakehouse(spark, lakehouse)
    version = lake.version("ops.ledger")
    assert append_ledger(lake, result.reports) == version  # the same run's rows: skipped
    assert ledger_rows(lakehouse) == 1

"""A run killed between stages goes on with ``codemill run --resume RUN_ID`` from its next stage,
and reads the versions its finished stages wrote, not a version written since."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from tests.test_idempotency import corpus

BIN = Path(sys.executable).parent
# Imported by every Python process that has the folder on its path: the driver dies (as a kill
# would end it) right after the named stage's ledger row is in.
HOOK = '''
import os
if os.environ.get("CODEMILL_TEST_DIE_AFTER"):
    import jobs.ledger as ledger
    real = ledger.append_ledger
    def dying(lake, reports, position=0):
        version = real(lake, reports, position)
        if any(r.stage == os.environ["CODEMILL_TEST_DIE_AFTER"] for r in reports):
            os._exit(137)
        return version
    ledger.append_ledger = dying
'''


def ledger(lake: Path) -> list[dict]:
    return DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()


def test_a_run_killed_after_dedup_resumes_with_split(tmp_path):
    sources = corpus(tmp_path / "corpus")
    lake = tmp_path / "lake"
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    sets = ["--set", f"lakehouse={lake}", "--set", sources, "--set", "spark.master=local[2]"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hook"), "CODEMILL_TEST_DIE_AFTER": "dedup"}
    killed = subprocess.run([str(BIN / "codemill"), "run", *sets], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    [run_id] = [p.name for p in (lake / "_runs").iterdir()]
    assert sorted(r["stage"] for r in ledger(lake)) == ["dedup", "filter", "ingest"]
    dedup_wrote = dict(next(r for r in ledger(lake) if r["stage"] == "dedup")["output_versions"])
    # someone writes silver.unique_files after the kill: the resumed split must not read it
    unique = lake / "silver" / "unique_files"
    write_deltalake(str(unique), DeltaTable(str(unique)).to_pyarrow_table().slice(0, 0),
                    mode="overwrite")
    assert DeltaTable(str(unique)).version() == dedup_wrote["silver.unique_files"] + 1

    resumed = subprocess.run([str(BIN / "codemill"), "run", "--resume", run_id, "--set",
                              f"lakehouse={lake}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    rows = {r["stage"]: r for r in ledger(lake)}
    assert len(ledger(lake)) == 7
    assert set(rows) == {"ingest", "filter", "dedup", "split", "commits", "chats", "build_sft"}
    assert {r["run_id"] for r in rows.values()} == {run_id}
    split = rows["split"]
    assert dict(split["input_versions"]) == {
        "silver.unique_files": dedup_wrote["silver.unique_files"]}
    assert split["rows_in"] == rows["dedup"]["rows_out"] > 0
    samples = DeltaTable(str(lake / "gold" / "samples")).to_pyarrow_table(columns=["file_id"])
    assert samples.num_rows > 0 and isinstance(samples, pa.Table)

    again = subprocess.run([str(BIN / "codemill"), "run", "--resume", run_id, "--set",
                            f"lakehouse={lake}"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 2 and "every stage finished" in again.stdout
    unknown = subprocess.run([str(BIN / "codemill"), "run", "--resume", "nope", "--set",
                              f"lakehouse={lake}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
    assert unknown.returncode == 2 and "no run folder" in unknown.stdout

"""Faults in the middle of a run: a Python worker that dies on its task's first attempt
(``local[2,4]``: Spark retries the task), and an executor JVM killed in the middle of dedup and of
split (``local-cluster``: the master starts another, Spark runs the lost tasks again). Either way
the run succeeds and writes the same tables as an undisturbed run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.runner import run_pipeline
from tests.conftest import make_config
from tests.test_cluster import spark_submit
from tests.test_idempotency import STAGES, content, corpus

BIN = Path(sys.executable).parent
MARK = "codemill_fault_marker"
# On every Python process with the folder on its path: the executor functions of filter, dedup
# and split fail the first time a task holds the marked file, by ending the worker (``worker``)
# or the executor JVM above it (``executor``).
HOOK = '''
import os
MARK = os.environ.get("CODEMILL_TEST_FAULT_MARK")
if MARK:
    def _fail(stage, found):
        # once per stage: a lost executor's map outputs make Spark run the whole stage again,
        # as a new stage attempt whose tasks count their attempts from 0 again
        if not found or stage not in os.environ["CODEMILL_TEST_FAULT_STAGES"].split(","):
            return
        try:
            os.close(os.open(os.path.join(os.environ["CODEMILL_TEST_FAULT_LOG"], stage),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        if os.environ["CODEMILL_TEST_FAULT"] == "executor":
            pid = os.getpid()
            while pid > 1:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"CoarseGrainedExecutorBackend" in f.read():
                        os.kill(pid, 9)
                        break
        os._exit(1)

    import udfs.filters, udfs.minhash, udfs.split
    _first_reason, _hashes, _split = (udfs.filters.first_reason, udfs.minhash.content_hashes,
                                      udfs.split.split_file)

    def first_reason(doc, p):
        _fail("filter", MARK in doc.text)
        return _first_reason(doc, p)

    def content_hashes(data, offsets):
        _fail("dedup", MARK.encode() in bytes(data[offsets[0]:offsets[-1]]))
        return _hashes(data, offsets)

    def split_file(text, *args, **kwargs):
        _fail("split", MARK in text)
        return _split(text, *args, **kwargs)

    udfs.filters.first_reason = first_reason
    udfs.minhash.content_hashes = content_hashes
    udfs.split.split_file = split_file
'''


@pytest.fixture(scope="module")
def clean(spark, tmp_path_factory):
    """The corpus (one file carries the marker) and the undisturbed run's content."""
    tmp_path = tmp_path_factory.mktemp("faults")
    sources = corpus(tmp_path / "corpus")
    marked = tmp_path / "corpus" / "two" / "c.py"
    marked.write_text(f"# {MARK}\n" + marked.read_text())
    lake = str(tmp_path / "clean")
    run_pipeline(make_config(lake, sources), STAGES, spark=spark)
    return sources, content(lake)


@pytest.fixture
def setup(clean, tmp_path):
    """``clean``, and this test's hook and record of the failures it caused."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    (tmp_path / "failed").mkdir()
    return clean


def fault_env(tmp_path: Path, fault: str, stages: str) -> dict:
    return {"PYTHONPATH": str(tmp_path / "hook"), "CODEMILL_TEST_FAULT_MARK": MARK,
            "CODEMILL_TEST_FAULT": fault, "CODEMILL_TEST_FAULT_STAGES": stages,
            "CODEMILL_TEST_FAULT_LOG": str(tmp_path / "failed")}


def failed(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "failed").iterdir())


def test_a_worker_dying_on_a_first_attempt_is_retried_with_identical_tables(setup, tmp_path):
    sources, want = setup
    lake = str(tmp_path / "retried")
    done = subprocess.run(
        [str(BIN / "codemill"), "run", "--set", f"lakehouse={lake}", "--set", sources,
         "--set", "spark.master=local[2,4]"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, **fault_env(tmp_path, "worker", "filter,dedup,split")}, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert failed(tmp_path) == ["dedup", "filter", "split"]  # each stage lost a task once
    assert content(lake) == want


@pytest.mark.cluster
def test_an_executor_killed_in_dedup_and_in_split_gives_identical_tables(setup, tmp_path):
    sources, want = setup
    lake = str(tmp_path / "killed")
    spark_submit("jobs/submit.py", "run", "--env", "cluster", "--set", f"lakehouse={lake}",
                 "--set", sources, "--set", "spark.shuffle_partitions=4",
                 env=fault_env(tmp_path, "executor", "dedup,split"))
    assert failed(tmp_path) == ["dedup", "split"]
    assert content(lake) == want

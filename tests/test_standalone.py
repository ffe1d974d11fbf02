"""The whole pipeline on a real standalone cluster: a master and two workers started with
``spark-class`` on 127.0.0.1 (the pyspark wheel has no start-*.sh scripts), the pipeline submitted
with ``spark-submit --master spark://…`` as the README's cluster section says, the code shipped
to the executors by the ``cluster`` overlay, and every process stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.test_cluster import spark_submit
from tests.test_idempotency import STAGES, content

pytestmark = pytest.mark.cluster
SPARK_HOME = Path(__import__("pyspark").__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_class(cls: str, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}
    return subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), cls, *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture
def cluster(tmp_path):
    """spark://127.0.0.1:<port> with two ALIVE workers of one core each."""
    port, ui = free_port(), free_port()
    procs = [spark_class("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui),
                         log=tmp_path / "master.log")]
    url = f"spark://127.0.0.1:{port}"
    try:
        for i in range(2):
            procs.append(spark_class(
                "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                "--work-dir", str(tmp_path / f"work{i}"), log=tmp_path / f"worker{i}.log"))
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
                    state = json.load(r)
                if sum(w["state"] == "ALIVE" for w in state["workers"]) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "master.log").read_text()[-3000:]
            time.sleep(1)
        yield url, ui
    finally:
        stop(procs)  # what we started, by PID (its session: spark-class execs java)


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop processes started with ``start_new_session``, each with its process group: TERM,
    then KILL after 30 s."""
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_the_pipeline_on_a_standalone_master_and_two_workers(cluster, reference_run, tmp_path):
    url, ui = cluster
    sources, reference = reference_run
    lake = tmp_path / "lake"
    spark_submit("jobs/submit.py", "run", "--env", "cluster", "--set", f"lakehouse={lake}",
                 "--set", sources, "--set", "spark.shuffle_partitions=4", master=url)
    ledger = DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    assert sorted(r["stage"] for r in ledger) == sorted(STAGES)
    for r in ledger:
        assert r["rows_in"] == r["rows_out"] + r["rows_dropped"] + r["rows_quarantined"]
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
        apps = json.load(r)["completedapps"]
    assert [a["name"] for a in apps] == ["codemill"]  # it ran on this master
    assert content(str(lake)) == reference

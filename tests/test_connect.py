"""The pipeline through Spark Connect (``spark.master: sc://host:port``), the Databricks
serverless path: a Connect server started from the pyspark wheel with ``spark-submit --class
…SparkConnectServer`` and Delta's jars, as the README's "Spark Connect" section says, and
``codemill run`` in a fresh process as a client with no JVM of its own. It must write what the
same stages write on a classic local session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.config import load_config
from jobs.session import resolve_delta_jars
from tests.test_idempotency import STAGES, content
from tests.test_standalone import free_port, stop

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent


@contextmanager
def running_connect_server(log: Path, master: str = "local[2]"):
    """sc://127.0.0.1:<port>: a Connect server started as the README says, with its output in
    ``log``, stopped by its process group on exit (bench/dedup_speed.py uses it too)."""
    port = free_port()
    jars = ",".join(resolve_delta_jars(load_config().spark.jars_dir))
    server = subprocess.Popen(
        [str(BIN / "spark-submit"), "--class",
         "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", master,
         "--jars", jars,
         "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
         "--conf", "spark.sql.catalog.spark_catalog="
                   "org.apache.spark.sql.delta.catalog.DeltaCatalog",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.ui.enabled=false",
         "--conf", "spark.databricks.delta.snapshotPartitions=2"],
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        stop([server])


@pytest.fixture
def connect_server(tmp_path):
    """sc://127.0.0.1:<port>, a Connect server on local[2]."""
    with running_connect_server(tmp_path / "connect.log") as url:
        yield url


PROBE = """
import sys
from pyspark.sql import functions as F
from jobs.config import SparkSettings
from jobs.session import default_parallelism, is_connect, spark_session
spark = spark_session(SparkSettings(master=sys.argv[1]))
where = F.udf(lambda _: __import__("jobs").__file__, "string")
print(is_connect(spark), default_parallelism(spark), spark.range(1).select(where("id")).first()[0])
"""


def test_the_pipeline_through_a_spark_connect_server(connect_server, reference_run, tmp_path):
    # the client ships jobs/ and udfs/ to the server's Python workers as an artifact
    probe = subprocess.run([sys.executable, "-c", PROBE, connect_server], capture_output=True,
                           text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    connect, cores, module = probe.stdout.split()
    assert (connect, cores) == ("True", "2")
    assert "codemill_code.zip/jobs/__init__.py" in module, module

    sources, reference = reference_run
    lake = tmp_path / "lake"
    done = subprocess.run(
        [str(BIN / "codemill"), "run", "--set", f"spark.master={connect_server}",
         "--set", f"lakehouse={lake}", "--set", sources, "--set", "spark.shuffle_partitions=4"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ledger = DeltaTable(str(lake / "ops" / "ledger")).to_pyarrow_table().to_pylist()
    assert sorted(r["stage"] for r in ledger) == sorted(STAGES)
    for r in ledger:
        assert r["rows_in"] == r["rows_out"] + r["rows_dropped"] + r["rows_quarantined"]
    unique = sorted(Path(p).name for p in DeltaTable(str(lake / "silver" / "unique_files"))
                    .to_pyarrow_table(columns=["path"]).column("path").to_pylist())
    # a.py and a_copy.py are one file, b_near.py is b.py with one word changed: one of each
    assert len(unique) == 3 and "c.py" in unique, unique
    assert len({"a.py", "a_copy.py"} & set(unique)) == 1
    assert len({"b.py", "b_near.py"} & set(unique)) == 1
    assert content(str(lake)) == reference

"""`codemill launch`: the commands name the hostfile they were given, and the launcher environment
(what DeepSpeed's pdsh runner would not pass on by itself) is written for every node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "conf" / "train" / "qwen2.5-coder-32b-lora.yaml"


def launch(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "codemill"), "launch", "--recipe",
                           str(RECIPE), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_launch_writes_and_uses_the_given_hostfile(tmp_path):
    done = launch(tmp_path, "--nodes", "3", "--hostfile", "hosts/cluster.txt", "--write")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hosts" / "cluster.txt").read_text() == (
        "node0 slots=8\nnode1 slots=8\nnode2 slots=8\n")
    [ds] = [line for line in done.stdout.splitlines() if line.startswith("deepspeed ")]
    assert ds.startswith("deepspeed --hostfile hosts/cluster.txt --num_nodes 3 --num_gpus 8 ")
    assert "--set train.num_nodes=3" in ds and "conf/hostfile" not in done.stdout
    env = dict(line.split("=", 1) for line in
               (tmp_path / ".deepspeed_env").read_text().splitlines())
    # names the pdsh runner does not export (its prefixes: NCCL, MLFLOW, PYTHON, MV2, UCX)
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert "NCCL_TIMEOUT" not in done.stdout  # no such variable: the recipe sets the timeout
    assert "train.dist_timeout_min = 60 min" in done.stdout


def test_launch_without_write_writes_nothing(tmp_path):
    done = launch(tmp_path, "--nodes", "2")
    assert done.returncode == 0, done.stderr
    assert "deepspeed --hostfile conf/hostfile --num_nodes 2" in done.stdout
    assert list(tmp_path.iterdir()) == []

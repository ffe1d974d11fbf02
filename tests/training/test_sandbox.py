"""The evaluation sandbox: limits, timeouts and no network, in a separate process."""

from __future__ import annotations

import socket
import time

from training.sandbox import run_python


def test_passing_and_failing_programs():
    ok = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')\n")
    assert (ok.passed, ok.status, ok.stdout) == (True, "passed", "ok\n")
    bad = run_python("assert 1 + 1 == 3\n")
    assert (bad.passed, bad.status) == (False, "failed")
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


def test_socket_connection_is_blocked():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "print('connected')\n")
    res = run_python(code, timeout_s=10)
    assert not res.passed and "connected" not in res.stdout
    try:
        server.accept()
        raise AssertionError("the sandboxed code reached the host")
    except TimeoutError:
        pass
    finally:
        server.close()
    # even with the Python-level guard removed, the namespace (where available) has no route
    undo = ("import importlib, socket\nimportlib.reload(socket)\n" + code)
    res = run_python(undo, timeout_s=10)
    if res.network.startswith("namespace"):
        assert not res.passed and "connected" not in res.stdout


def test_runs_in_a_private_temporary_directory():
    res = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\n")
    cwd, listing = res.stdout.splitlines()
    assert "codemill-sandbox-" in cwd and listing == "['guard', 'main.py']"
    import os

    assert not os.path.exists(cwd)

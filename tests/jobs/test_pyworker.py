"""jobs.pyworker: zip importers that keep their directory until the archive changes."""

from __future__ import annotations

import importlib
import os
import socket
import sys
import zipfile
import zipimport

from jobs.pyworker import (
    StatCheckedZipImporter,
    keep_zip_directories,
    map_in_arrow,
    quick_acks,
)


def _zip(path, **modules: str) -> str:
    with zipfile.ZipFile(path, "a") as z:
        for name, source in modules.items():
            z.writestr(f"{name}.py", source)
    return str(path)


def test_a_zip_directory_is_read_again_only_when_the_archive_changed(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "first.zip", cm_zip_a="VALUE = 'a'\n")
    monkeypatch.setattr(sys, "path", [archive, *sys.path])
    monkeypatch.setattr(sys, "path_hooks", list(sys.path_hooks))
    monkeypatch.setattr(sys, "path_importer_cache", dict(sys.path_importer_cache))
    reads: list[str] = []
    read_directory = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory",
                        lambda path: reads.append(path) or read_directory(path))
    names = ("cm_zip_a", "cm_zip_b", "cm_zip_c")
    try:
        assert importlib.import_module("cm_zip_a").VALUE == "a"
        assert type(sys.path_importer_cache[archive]) is zipimport.zipimporter
        if sys.version_info < (3, 12):  # the eager re-read this module avoids (lazy from 3.12)
            reads.clear()
            importlib.invalidate_caches()
            assert reads.count(archive) == 1

        keep_zip_directories()
        assert type(sys.path_importer_cache[archive]) is StatCheckedZipImporter
        reads.clear()
        importlib.invalidate_caches()
        importlib.invalidate_caches()
        assert archive not in reads

        # the archive gains a module: the next invalidation reads it again, the module imports
        stamp = os.stat(archive).st_mtime_ns
        _zip(archive, cm_zip_b="VALUE = 'b'\n")
        os.utime(archive, ns=(stamp + 10**9, stamp + 10**9))
        importlib.invalidate_caches()
        assert reads.count(archive) == 1
        assert importlib.import_module("cm_zip_b").VALUE == "b"

        # a zip put on the path later gets the checked importer from the path hook
        later = _zip(tmp_path / "later.zip", cm_zip_c="VALUE = 'c'\n")
        sys.path.insert(0, later)
        assert importlib.import_module("cm_zip_c").VALUE == "c"
        assert type(sys.path_importer_cache[later]) is StatCheckedZipImporter
        keep_zip_directories()  # idempotent
        assert sys.path_hooks.count(StatCheckedZipImporter) == 1
        assert zipimport.zipimporter not in sys.path_hooks
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_tasks_of_a_reused_python_worker_do_not_read_zip_directories(spark):
    """Spark's worker invalidates the import caches before every task; after map_in_arrow's
    first task in a worker, that reads no zip directory (pyspark.zip, the spark-core jar)."""

    def report(batches):
        import os
        import sys
        import zipimport

        import pyarrow as pa

        counter = getattr(sys, "_cm_test_zip_reads", None)
        first = counter is None
        if first:  # count this worker's directory reads from now on
            counter = sys._cm_test_zip_reads = [0]
            read_directory = zipimport._read_directory

            def counting(path):
                counter[0] += 1
                return read_directory(path)

            zipimport._read_directory = counting
        reads, counter[0] = counter[0], 0
        rows = sum(b.num_rows for b in batches)
        zips = [type(f).__name__ for f in sys.path_importer_cache.values()
                if isinstance(f, zipimport.zipimporter)]
        yield pa.RecordBatch.from_pydict({
            "pid": [os.getpid()], "first": [first], "reads": [reads], "rows": [rows],
            "plain_zip_importers": [sum(name != "StatCheckedZipImporter" for name in zips)],
            "zip_importers": [len(zips)]})

    schema = ("pid long, first boolean, reads long, rows long, plain_zip_importers long, "
              "zip_importers long")
    out = map_in_arrow(spark.range(0, 800, numPartitions=8), report, schema).collect()
    assert sum(r.rows for r in out) == 800
    later = [r for r in out if not r.first]
    assert len(later) >= 4, out  # 8 tasks on 2 reused workers
    assert all(r.zip_importers > 0 for r in out), out  # pyspark.zip is on the workers' path
    assert [r.plain_zip_importers for r in out] == [0] * 8, out
    assert [r.reads for r in later] == [0] * len(later), out


def test_quick_acks_puts_every_tcp_connection_of_the_process_in_quick_ack_mode():
    """The executor's socket to a worker is a TCP connection like this one (Linux only: the
    option and the delayed acknowledgements it undoes are Linux's)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            peer, _ = server.accept()
            with peer:
                for sock in (client, peer):  # delayed acknowledgements, as after some traffic
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
                quick_acks()
                for sock in (client, peer):
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
                    sock.sendall(b"still usable")  # the descriptors were duplicated, not closed
                assert client.recv(64) == b"still usable" and peer.recv(64) == b"still usable"

"""Python work on executors: ``map_in_arrow``, Spark's ``mapInArrow`` without a per-task cost.

Spark 4.0's Python worker calls ``importlib.invalidate_caches()`` at the start of every task
(``pyspark.worker_util.setup_spark_files``). Before Python 3.12 that makes every
``zipimport.zipimporter`` re-read the whole directory of its archive. A worker holds about 16 of
them: one per package it imported from ``pyspark.zip`` (1,220 entries each time) and from the
spark-core jar Spark puts on the workers' path, plus one for the code zip a cluster run
ships. CPython made the invalidation lazy in 3.12 (python/cpython#103200) and Spark made the call
conditional after 4.0 (SPARK-54744); this project supports Python 3.10 and 3.11 and runs Spark 4.0.

That call was half of a reused worker's time between two tasks (bench/RESULTS.md, "Dedup speed").

``keep_zip_directories`` swaps the worker's zip importers for ``StatCheckedZipImporter``, which
re-reads its archive when the file's size or modification time changed, and skips the read
otherwise: the same answer at the cost of one ``stat`` per importer.

``quick_acks`` takes away a second fixed cost of every Python task: ~40 ms of a delayed TCP
acknowledgement before the task's first Arrow batch arrives.
"""

from __future__ import annotations

import os
import sys
import zipimport
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType


class StatCheckedZipImporter(zipimport.zipimporter):
    """A ``zipimporter`` whose ``invalidate_caches`` re-reads the archive's directory only when the
    archive changed (size or modification time), as a cache invalidation should."""

    def __init__(self, path: str):
        super().__init__(path)
        self._stamp = self._archive_stamp()

    def _archive_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.archive)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def invalidate_caches(self) -> None:
        stamp = self._archive_stamp()
        if stamp is not None and stamp == self._stamp:
            return
        super().invalidate_caches()
        self._stamp = stamp


def keep_zip_directories() -> None:
    """Make this process's zip importers ``StatCheckedZipImporter``s: the ones already made (in
    ``sys.path_importer_cache``) and the ones the path hook makes from now on. Idempotent."""
    if StatCheckedZipImporter not in sys.path_hooks:
        sys.path_hooks[:] = [StatCheckedZipImporter if hook is zipimport.zipimporter else hook
                             for hook in sys.path_hooks]
    for path, finder in list(sys.path_importer_cache.items()):
        if type(finder) is zipimport.zipimporter:
            sys.path_importer_cache[path] = StatCheckedZipImporter(path)


def quick_acks() -> None:
    """Acknowledge what the JVM sent this worker at once (Linux ``TCP_QUICKACK``), on every TCP
    socket the process holds: its connection to the executor.

    Spark 4.0's executor writes a task to its Python worker over a TCP socket without
    ``TCP_NODELAY``: the task's header first, then the first Arrow batch. Nagle's algorithm holds
    that second, small write until the header is acknowledged, and Linux delays the
    acknowledgement of a lone segment by up to 40 ms, so every Python task began with ~40 ms in
    which neither side worked (strace of a worker: the batch arrived 35-45 ms after the header,
    task after task). Asked for once the header is read, the acknowledgement goes out at once and
    the batch follows (bench/RESULTS.md, "Dedup speed"). Elsewhere (not Linux) it does
    nothing. The kernel may leave quick-ack mode again later, so each task asks anew (a few dozen
    system calls).
    """
    import socket
    import stat

    option = getattr(socket, "TCP_QUICKACK", None)
    if option is None or not os.path.isdir("/proc/self/fd"):
        return
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET,
                                                                       socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, option, 1)
        except (OSError, ValueError):
            continue


def map_in_arrow(df: DataFrame, fn: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
                 schema: str | StructType) -> DataFrame:
    """``df.mapInArrow(fn, schema)``, with ``keep_zip_directories`` and ``quick_acks`` run first
    in each task: the worker's later tasks skip re-reading the zip directories, and the task's
    input is not held back by a delayed acknowledgement. Every stage's Python work on executors
    goes through here."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        keep_zip_directories()
        quick_acks()
        return fn(batches)

    return df.mapInArrow(run, schema)

"""Reading the files of a JSONL, Parquet or chat source through Spark, without losing any.

Two kinds of file name break Spark's reading of a local folder:

* a colon (a timestamped export, ``chat-2026-12-06T10:00.jsonl``): Hadoop's default local file
  system opens a ``.<name>.crc`` checksum file beside each file it reads, and that relative name
  with a colon parses as a URI with a scheme, so the whole scan fails ("Relative path in absolute
  URI"). ``reader`` reads sources through Hadoop's raw local file system, which keeps no checksum
  files; the options apply to that read's ``file:`` paths only, so the lakehouse's own reads and
  writes are unchanged.
* bytes that are not UTF-8: the JVM decodes the name with replacement characters, the file it
  names then does not exist, and the listing skips it without a word. ``unopenable`` finds such
  files on the driver so that the stage can quarantine each one by name.
"""

from __future__ import annotations

import glob
import os
import re
from typing import TYPE_CHECKING

from udfs.trees import as_text

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrameReader, SparkSession

SOURCE_OPTIONS = {"fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
                  # a cached file system of the default kind would otherwise serve the read
                  "fs.file.impl.disable.cache": "true"}
NOT_UTF8 = "unreadable_path: the file name is not UTF-8, which Spark cannot open; rename it"


def reader(spark: SparkSession, path: str | None = None) -> DataFrameReader:
    """``spark.read`` for a source's files (see the module's docstring). Given the source's
    ``path``, it reads the files of its sub-folders too (a dump laid out ``data/python/…``),
    which Spark's folder listing skips without a word, unless the folders are a Hive-style
    partitioned dataset (``lang=python/``): that is left to Spark's partition discovery, whose
    columns recursive lookup would drop."""
    read = spark.read.options(**SOURCE_OPTIONS)
    return read.option("recursiveFileLookup", "true") if path and not partitioned(path) else read


def partitioned(path: str) -> bool:
    """Whether a local source's folders are named ``key=value`` (Hive-style partitions). A remote
    source is not listed here; a ``=`` in its own path says so."""
    files = local_files(path)
    if files is None:
        return "=" in path.rsplit("/", 1)[-1]
    top = os.fsencode(path.removeprefix("file:"))
    return any(b"=" in os.path.relpath(os.path.dirname(f), top) for f in files)


def glob_escaped(path: str) -> str:
    """A file's path as Spark reads it literally: Hadoop expands ``* ? [ ] { }`` (and ``\\``
    escapes) in every path it is given, so a name like ``[draft].jsonl`` is escaped."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def file_name() -> Column:
    """Each row's file as its name (``file:/data/my export.jsonl``), not URL-encoded as Spark's
    ``_metadata.file_path`` gives it (``my%20export.jsonl``, SPARK-43284). java.net.URI encodes
    every ``%`` and leaves ``+`` as is, so decoding ``%XX`` gives the name back; ``url_decode``
    is form decoding (``+`` → space), hence ``+`` is escaped first."""
    from pyspark.sql import functions as F

    return F.url_decode(F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B")))


def _hidden(name: bytes) -> bool:
    """Names Spark's file listing leaves out on purpose (``_SUCCESS``, ``.crc``; a ``_`` name
    with ``=`` is a partition folder)."""
    return name.startswith(b".") or (name.startswith(b"_") and b"=" not in name)


def is_utf8(name: bytes | str) -> bool:
    """Whether a file name (bytes, or ``os.fsdecode``'s text) is UTF-8 through and through."""
    try:
        (name if isinstance(name, bytes) else os.fsencode(name)).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def local_files(path: str) -> list[bytes] | None:
    """Every file of a local source (a file, a folder with its sub-folders, or a glob) that
    Spark's listing would read, as the file system's bytes, sorted; None for a remote source
    (object stores and ``dbfs:``), which only Spark lists."""
    if "://" in path or path.startswith("dbfs:"):
        return None
    top = os.fsencode(path.removeprefix("file:"))
    roots = [top] if os.path.exists(top) else sorted(glob.glob(top))
    files = []
    for root in roots:
        if os.path.isfile(root):
            files.append(root)
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not _hidden(d)]
            files += [os.path.join(folder, n) for n in names if not _hidden(n)]
    return sorted(files)


def unopenable(path: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """The files of a local source that Spark's listing would skip silently because their path
    is not UTF-8, as text (``udfs.trees.as_text``), sorted. ``suffixes`` keeps only names ending
    so (case-insensitive), as a source's file filter does. Object stores and ``dbfs:`` name their
    keys in UTF-8: nothing to find there."""
    wanted = tuple(s.lower().encode() for s in suffixes or ())
    return [as_text(os.fsdecode(f)) for f in local_files(path) or ()
            if not is_utf8(f) and (not wanted or f.lower().endswith(wanted))]

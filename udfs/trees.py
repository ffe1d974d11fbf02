"""Walking local source trees and git working copies into file listings.

Spark's own file listing skips every name that starts with ``_`` or ``.`` (so ``__init__.py`` and
``_vendor/`` would vanish without a trace), hence this walker: it runs on the driver, reads only
metadata and the small license files, and leaves reading contents to the executors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from udfs.languages import language_for_path
from udfs.licenses import is_license_file, is_metadata_file, repo_license

VCS_DIRS = frozenset({".git", ".hg", ".svn"})
_MAX_LICENSE_BYTES = 256 * 1024


@dataclass(frozen=True)
class TreeFile:
    """One file under a repository root. ``skip`` names why its contents will not be ingested."""

    repo: str
    relpath: str
    abspath: str
    size: int
    language: str | None
    license: str | None
    skip: str | None


def repo_roots(path: str | Path, layout: str) -> list[tuple[str, Path]]:
    """``(repo name, root)`` pairs: each sub-folder (layout ``repos``) or ``path`` itself (``repo``)."""
    root = Path(path).resolve()
    if layout == "repo":
        return [(root.name, root)]
    return [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and p.name not in VCS_DIRS]


def _read_small(path: Path) -> str | None:
    try:
        if path.stat().st_size > _MAX_LICENSE_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def walk_repo(repo: str, root: Path) -> Iterator[TreeFile]:
    """Every regular file under ``root`` in a stable order, with the repo's license attached.

    Files inside VCS folders are listed with ``skip="vcs_metadata"`` and files of no supported
    language with ``skip="unsupported_extension"``, so the ingest ledger can count them.
    """
    entries: list[tuple[str, Path, int]] = []
    evidence: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if not full.is_file():
                continue  # sockets, broken links
            rel = full.relative_to(root).as_posix()
            entries.append((rel, full, full.stat().st_size))
            if is_license_file(rel) or is_metadata_file(rel):
                text = _read_small(full)
                if text is not None:
                    evidence.append((rel, text))
    license_id = repo_license(evidence)
    for rel, full, size in entries:
        language = language_for_path(rel)
        if set(rel.split("/")[:-1]) & VCS_DIRS:
            skip = "vcs_metadata"
        elif language is None:
            skip = "unsupported_extension"
        else:
            skip = None
        yield TreeFile(repo, rel, str(full), size, language, license_id, skip)

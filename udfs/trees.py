"""Walking local source trees and git working copies into file listings.

Spark's own file listing skips every name that starts with ``_`` or ``.`` (so ``__init__.py`` and
``_vendor/`` would vanish without a trace), hence this walker: it runs on the driver, reads only
metadata and the small license files, and leaves reading contents to the executors.
"""

from __future__ import annotations

import errno
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
    """One entry under a repository root. ``skip`` names why its contents will not be ingested
    (dropped with that reason); ``error`` why they could not be (quarantined with it)."""

    repo: str
    relpath: str
    abspath: str
    size: int
    language: str | None
    license: str | None
    skip: str | None
    error: str | None = None


def as_text(name: str) -> str:
    """A file-system name as text, each byte that is not UTF-8 written as ``\\xNN``.

    POSIX names are bytes: ``os.walk`` hands an undecodable one over with surrogate escapes, which
    no UTF-8 column (Arrow, Delta) can hold, and a lossy ``?`` would name a file that does not
    exist. Escaped, the name stays one line of text that says which bytes it had.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


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


def _link_problem(path: Path, root: Path) -> str | None:
    """Why a symbolic link's contents are not ingested, or None for a link to a regular file
    inside the tree (read like any file). A link may point anywhere on the machine that runs
    the job: followed out of the tree it would ingest files nobody put in the corpus."""
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 raises this for a loop
        return "symlink_loop"
    except OSError as exc:
        return "symlink_loop" if exc.errno == errno.ELOOP else "broken_symlink"
    if not target.is_relative_to(root):
        return "symlink_outside_tree"
    return None if target.is_file() else "not_a_regular_file"


def walk_repo(repo: str, root: Path) -> Iterator[TreeFile]:
    """Every file under ``root`` in a stable order, with the repo's license attached.

    Files inside VCS folders are listed with ``skip="vcs_metadata"``, files of no supported
    language with ``skip="unsupported_extension"``, links that lead nowhere, in a circle or out of
    the tree and other non-regular files with their own reasons (``_link_problem``), so the ingest
    ledger counts them; a folder that cannot be listed is an entry with ``error``. Links to
    folders are not followed (``os.walk``'s default), so a folder loop is walked once.
    """
    real_root = root.resolve()
    entries: list[tuple[str, Path, int, str | None]] = []
    evidence: list[tuple[str, str]] = []
    unlisted: list[tuple[str, str]] = []

    def on_error(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        unlisted.append((rel, f"unreadable_dir: {exc.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            problem = _link_problem(full, real_root) if full.is_symlink() else (
                None if full.is_file() else "not_a_regular_file")  # sockets, FIFOs, devices
            if problem:
                entries.append((rel, full, 0, problem))
                continue
            try:
                size = full.stat().st_size
            except OSError as exc:  # removed since the listing, or no permission on a link
                unlisted.append((rel, f"unreadable_file: {exc.strerror}"))
                continue
            entries.append((rel, full, size, None))
            if is_license_file(rel) or is_metadata_file(rel):
                text = _read_small(full)
                if text is not None:
                    evidence.append((rel, text))
    license_id = repo_license(evidence)
    for rel, error in unlisted:
        yield TreeFile(repo, rel, str(root / rel), 0, language_for_path(rel), license_id,
                       None, error)
    for rel, full, size, problem in entries:
        language = language_for_path(rel)
        if problem:
            skip = problem
        elif set(rel.split("/")[:-1]) & VCS_DIRS:
            skip = "vcs_metadata"
        elif language is None:
            skip = "unsupported_extension"
        else:
            skip = None
        yield TreeFile(repo, rel, str(full), size, language, license_id, skip)

"""``codemill corpus``: a real corpus built from code that is already on the machine.

Layout written (``layout: repos`` of a tree source): ``<out>/<repo>/<files>``, one folder per repo.

* ``cpython-stdlib``: the running interpreter's standard library (``*.py``) with CPython's LICENSE
  (psf-2.0). Its test suite is left out unless asked for: it is half the bytes and full of files
  that are deliberately broken.
* one repo per installed distribution in site-packages (named by the distribution), with the source
  files its RECORD lists and its ``*.dist-info/METADATA`` and license files, so ingest finds the
  license the way it would in the wild. pip, setuptools and others vendor copies of other
  distributions, which gives the dedup stage real near-duplicates.
* ``--tree PATH``: any other source tree or git working copy, copied without its ``.git``.

Nobody here wrote this code, which is the point: the filters and dedup meet real files.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from udfs.languages import language_for_path
from udfs.licenses import is_license_file, is_metadata_file
from udfs.trees import VCS_DIRS


@dataclass
class CorpusSummary:
    out: Path
    repos: dict[str, int] = field(default_factory=dict)  # repo → files copied
    bytes: int = 0
    on_file: Callable[[str], None] | None = None  # called with the repo of each file copied

    @property
    def files(self) -> int:
        return sum(self.repos.values())


def _copy(src: Path, dst: Path, summary: CorpusSummary, repo: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    summary.repos[repo] = summary.repos.get(repo, 0) + 1
    summary.bytes += dst.stat().st_size
    if summary.on_file:
        summary.on_file(repo)


def _wanted(rel: str) -> bool:
    return language_for_path(rel) is not None or is_license_file(rel) or is_metadata_file(rel)


def add_stdlib(out: Path, summary: CorpusSummary, include_tests: bool = False) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    repo = "cpython-stdlib"
    skip_dirs = {"site-packages", "__pycache__", "dist-packages"}
    if not include_tests:
        skip_dirs |= {"test", "tests", "idle_test"}
    for src in sorted(stdlib.rglob("*.py")):
        rel = src.relative_to(stdlib)
        if skip_dirs & set(rel.parts[:-1]):
            continue
        _copy(src, out / repo / rel, summary, repo)
    license_file = stdlib / "LICENSE.txt"
    if license_file.exists():
        _copy(license_file, out / repo / "LICENSE", summary, repo)


def _dist_name(name: str) -> str:
    return name.lower().replace("_", "-")


def add_site_packages(out: Path, summary: CorpusSummary, paths: list[str] | None = None,
                      only: list[str] | None = None) -> None:
    """Distributions importable from ``paths`` (default: ``sys.path``); ``only`` names a subset."""
    wanted = {_dist_name(n) for n in only} if only else None
    seen: set[str] = set()
    for dist in sorted(md.distributions(path=paths or sys.path),
                       key=lambda d: (d.metadata["Name"] or "").lower()):
        name = _dist_name(dist.metadata["Name"] or "")
        if not name or name in seen or not dist.files or (wanted and name not in wanted):
            continue
        seen.add(name)
        for entry in dist.files:
            rel = entry.as_posix()
            if rel.startswith("..") or not _wanted(rel) or "__pycache__" in rel:
                continue
            src = Path(dist.locate_file(entry))
            if src.is_file():
                _copy(src, out / name / rel, summary, name)


def add_tree(out: Path, summary: CorpusSummary, tree: Path) -> None:
    tree = tree.resolve()
    repo, n = tree.name, 1
    while (out / repo).exists():  # two trees with one name (a package and its vendored copy)
        n += 1
        repo = f"{tree.name}-{n}"
    for src in sorted(tree.rglob("*")):
        rel = src.relative_to(tree)
        if src.is_file() and not (set(rel.parts) & VCS_DIRS):
            _copy(src, out / repo / rel, summary, repo)


def build_corpus(out: str | Path, stdlib: bool = True, site_packages: bool = True,
                 trees: list[str] | tuple[str, ...] = (), stdlib_tests: bool = False,
                 site_paths: list[str] | None = None,
                 distributions: list[str] | None = None,
                 on_file: Callable[[str], None] | None = None) -> CorpusSummary:
    """Write a fresh corpus to ``out`` (replacing what was there) and say what it holds.
    ``on_file``: called with the repo of each file as it is copied (a progress display)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    summary = CorpusSummary(out, on_file=on_file)
    if stdlib:
        add_stdlib(out, summary, include_tests=stdlib_tests)
    if site_packages:
        add_site_packages(out, summary, site_paths, only=distributions)
    for tree in trees:
        add_tree(out, summary, Path(tree))
    return summary

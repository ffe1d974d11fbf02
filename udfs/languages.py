"""Programming language of a file from its extension.

The eight languages below are the ones codemill parses with tree-sitter downstream. ``.h`` is read
as C: a C++ header with a ``.h`` name still parses with the C++ grammar's superset later, while the
reverse would mislabel every C project.
"""

from __future__ import annotations

import posixpath

LANGUAGES: tuple[str, ...] = (
    "python",
    "javascript",
    "typescript",
    "go",
    "rust",
    "java",
    "c",
    "cpp",
)

EXTENSION_LANGUAGE: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".c++": "cpp",
    ".hh": "cpp",
    ".hpp": "cpp",
    ".hxx": "cpp",
}


def language_for_path(path: str) -> str | None:
    """Return the language for ``path`` by its extension (case-insensitive), or None."""
    return EXTENSION_LANGUAGE.get(posixpath.splitext(path)[1].lower())


def normalize_language(name: str | None) -> str | None:
    """Lower-case a dataset's language label and map common aliases (``C++`` → ``cpp``)."""
    if name is None:
        return None
    key = name.strip().lower()
    return {"c++": "cpp", "js": "javascript", "ts": "typescript", "golang": "go"}.get(key, key)

"""Instruction templates (data in conf/sft_templates.yaml) and the metadata that fills them.

Every task type has its own list; ``pick`` chooses one by SHA-256 of the sample id and task type, so
the choice is stable across reruns and machines. ``Templates.load`` rejects unknown placeholders and
task types with fewer than ``MIN_TEMPLATES`` entries, so a typo fails before any work starts.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLACEHOLDERS = frozenset({"language", "name", "qualname", "kind", "purpose", "params", "path",
                          "message"})
TASK_TYPES = ("function_completion", "class_completion", "docstring", "fim", "line_completion",
              "refactor", "debug", "write_tests", "explain", "implement_from_spec",
              "add_comments", "type_hints", "commit_edit", "commit_diff")
MIN_TEMPLATES = 5
FILL_MARK = "<FILL_ME>"

LANGUAGE_NAMES = {"python": "Python", "javascript": "JavaScript", "typescript": "TypeScript",
                  "go": "Go", "rust": "Rust", "java": "Java", "c": "C", "cpp": "C++"}
# Markdown fence names (the ones GitHub and most chat UIs highlight)
FENCE = {"python": "python", "javascript": "javascript", "typescript": "typescript", "go": "go",
         "rust": "rust", "java": "java", "c": "c", "cpp": "cpp"}


class TemplateError(ValueError):
    """The templates file is invalid; the message names the task type and template."""


@dataclass(frozen=True)
class Templates:
    system_prompt: str
    by_task: dict[str, tuple[str, ...]]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "templates") -> Templates:
        if not isinstance(data, dict) or not isinstance(data.get("templates"), dict):
            raise TemplateError(f"{source}: needs a 'templates' mapping of task type → list")
        by_task: dict[str, tuple[str, ...]] = {}
        for task in TASK_TYPES:
            items = data["templates"].get(task) or []
            if len(items) < MIN_TEMPLATES:
                raise TemplateError(f"{source}: templates.{task} has {len(items)} templates; "
                                    f"at least {MIN_TEMPLATES} are required")
            for i, text in enumerate(items):
                names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
                bad = names - PLACEHOLDERS
                if bad:
                    raise TemplateError(f"{source}: templates.{task}[{i}] uses unknown "
                                        f"placeholder(s) {sorted(bad)}; allowed: "
                                        f"{sorted(PLACEHOLDERS)}")
            by_task[task] = tuple(items)
        extra = set(data["templates"]) - set(TASK_TYPES)
        if extra:
            raise TemplateError(f"{source}: unknown task type(s) {sorted(extra)}; "
                                f"allowed: {', '.join(TASK_TYPES)}")
        return cls(system_prompt=str(data.get("system_prompt", "")).strip(), by_task=by_task)

    @classmethod
    def load(cls, path: str | Path) -> Templates:
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text()), str(path))

    def pick(self, task: str, sample_id: str) -> str:
        """The template for ``sample_id`` (deterministic)."""
        options = self.by_task[task]
        digest = hashlib.sha256(f"{task}\0{sample_id}".encode()).digest()
        return options[int.from_bytes(digest[:8], "big") % len(options)]

    def render(self, task: str, sample_id: str, meta: dict[str, str]) -> str:
        return self.pick(task, sample_id).format_map(_Filled(meta))


class _Filled(dict):
    """Placeholder values with stated defaults for what a sample lacks."""

    DEFAULTS = {"name": "this code", "qualname": "this code", "kind": "code",
                "purpose": "do what its name says", "params": "", "path": "the file",
                "language": "the same language", "message": "Make the change"}

    def __init__(self, meta: dict[str, str]):
        super().__init__({k: v for k, v in meta.items() if v})

    def __missing__(self, key: str) -> str:
        return self.DEFAULTS[key]


_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.S)
_COMMENT_MARKS = re.compile(r"^\s*(/\*\*?|\*/|\*|///?|#)\s?", re.M)


def doc_text(doc: str) -> str:
    """The prose of a docstring or doc comment: quotes and comment markers removed."""
    text = doc.strip()
    for quote in ('"""', "'''", '"', "'"):
        if text.startswith(quote) and text.endswith(quote) and len(text) >= 2 * len(quote):
            text = text[len(quote):-len(quote)]
            break
    else:
        text = text.removesuffix("*/")
        text = _COMMENT_MARKS.sub("", text)
    return "\n".join(line.strip() for line in text.strip().splitlines()).strip()


def purpose(doc: str | None) -> str | None:
    """First sentence of a docstring, as a verb phrase: "Add ``qty``." → "add ``qty``"."""
    if not doc:
        return None
    text = " ".join(doc_text(doc).split())
    if not text:
        return None
    m = _SENTENCE.match(text)
    sentence = (m.group(1) if m else text).rstrip(".!?").strip()
    if not sentence:
        return None
    return sentence[0].lower() + sentence[1:] if sentence[:2] != sentence[:2].upper() else sentence


def code_block(code: str, language: str | None) -> str:
    """A fenced Markdown block; the fence grows if the code holds a fence itself."""
    fence = "```"
    while fence in code:
        fence += "`"
    return f"{fence}{FENCE.get(language or '', '')}\n{code.rstrip()}\n{fence}"

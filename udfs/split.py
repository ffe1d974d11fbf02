"""Splitting one source file into training samples along its syntax tree.

Sample types (``task_type``), after the splitting plan in ../shared/seeds/002 (improvement 1) and
the FIM recipe of ../shared/seeds/003 (``repo2fim``); every span is UTF-8 bytes ``[start, end)``:

Completion and docstring samples also carry ``spans["definition"]``: the whole definition with its
decorators / export / template wrapper (not its doc comment).

``function_completion``
    context = the file up to the function's body (imports, decorators, signature and, in Python, the
    docstring), target = the body. Python bodies start after the docstring; a body that is only a
    docstring is skipped (``empty_body``).
``class_completion``
    context = the file up to the end of the class's first method (class header, fields, first
    method), target = the rest of the class. Classes with fewer than two methods give none.
``docstring``
    context = the definition without its documentation, target = the documentation: Python
    docstrings (the lines holding the docstring are removed from the context); elsewhere the doc
    comments directly above the definition (``/** */`` and ``///``; in Go any ``//`` comment).
``fim``
    prefix / middle / suffix where the middle is one syntax node: the smallest named node (not the
    root, not a comment, without errors) around a random byte that is at least
    ``fim_min_middle_bytes`` long — so a body, a block, a statement or an expression. A file gets FIM
    samples with probability ``fim_rate``, each in SPM order with probability ``fim_spm_rate``
    (StarCoder's 0.5 / 0.5), rendered by ``udfs.fim.render_fim``.
``line_completion`` (``split_method = fallback``)
    for files with no grammar, files that do not parse, or files whose tree yields no sample: split
    points at blank-line boundaries (the start of a non-blank line after a blank one), evenly spread;
    context = the file up to the point, target = the next paragraph. A file of one line gives none
    and is dropped as ``unsplittable``.

Limits: contexts and FIM prefixes/suffixes longer than their limit are cut at a line boundary
(``cut`` names it: ``context_cut``, ``fim_cut``, ``target_cut``); targets outside
``[min_target_bytes, max_target_bytes]`` are skipped (``target_too_short`` / ``target_too_long``);
at most ``max_samples_per_file`` samples per file, drawn round-robin over task types after a seeded
shuffle within each type, the rest skipped as ``over_file_cap``. Every skipped candidate is returned
with its reason. Everything random is seeded by ``seed`` and the file id: reruns are identical.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from udfs.fim import contains_special_tokens, render_fim
from udfs.syntax import SYNTAX, Definition, ParseRefused, definitions, grammar_name, parse

TASKS: tuple[str, ...] = ("function_completion", "class_completion", "docstring", "fim")
FALLBACK_TASK = "line_completion"


@dataclass(frozen=True)
class SplitParams:
    """Knobs of ``split_file``; defaults stated in the module docstring where they come from.

    tasks: AST task types to produce (subset of ``TASKS``); fallback is always on.
    max_samples_per_file: cap per file (the seed expects 3–5 samples per file).
    max_context_bytes / fim_max_bytes: longer contexts (FIM: prefix + middle + suffix) are cut.
    min_target_bytes / max_target_bytes: targets outside these bounds are skipped.
    fim_rate / fim_spm_rate: StarCoder's defaults, 0.5 / 0.5. fim_per_file: FIM samples per FIM file.
    fim_min_middle_bytes / fim_max_middle_bytes: size of the middle node.
    fallback_samples: split points per fallback file.
    parse_timeout_s: a parse is cancelled after this; split_timeout_s: bound on the whole file.
    max_parse_bytes / max_nesting: files beyond these are not parsed (quarantined).
    seed: for FIM choices and the per-file shuffle.
    """

    tasks: tuple[str, ...] = TASKS
    max_samples_per_file: int = 8
    max_context_bytes: int = 8192
    min_target_bytes: int = 8
    max_target_bytes: int = 8192
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.5
    fim_per_file: int = 2
    fim_min_middle_bytes: int = 8
    fim_max_middle_bytes: int = 2048
    fim_max_bytes: int = 16384
    fallback_samples: int = 3
    parse_timeout_s: float = 2.0
    split_timeout_s: float = 5.0
    max_parse_bytes: int = 1 << 20
    max_nesting: int = 256
    seed: int = 0

    def __post_init__(self):
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"tasks: unknown {bad}; allowed: {', '.join(TASKS)}")
        for name in ("max_samples_per_file", "max_context_bytes", "max_target_bytes",
                     "fim_max_middle_bytes", "fim_max_bytes", "max_parse_bytes", "max_nesting"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")
        for name in ("fim_rate", "fim_spm_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        for name in ("parse_timeout_s", "split_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.fim_min_middle_bytes > self.fim_max_middle_bytes:
            raise ValueError("fim_min_middle_bytes: exceeds fim_max_middle_bytes")


@dataclass
class FileSplit:
    """What ``split_file`` made of one file.

    parse_status: ok | error (the tree has syntax errors) | no_grammar | too_large | too_deep |
        parse_timeout | split_timeout. refused: the quarantine reason when the file was not split
        (bounds); drop_reason: ``unsplittable`` / ``no_samples`` when it yielded nothing.
    """

    parse_status: str
    split_method: str | None = None  # ast | fallback
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None
    drop_reason: str | None = None


_NEWLINE = re.compile(rb"\n")


def _char_start(b: bytes, i: int) -> int:
    """Move ``i`` forward to the start of a UTF-8 character."""
    while i < len(b) and (b[i] & 0xC0) == 0x80:
        i += 1
    return i


def _cut_left(b: bytes, lo: int, hi: int, limit: int) -> tuple[int, bool]:
    """Start of the longest suffix of ``b[lo:hi]`` within ``limit`` bytes, at a line start if one
    lies in the window."""
    if hi - lo <= limit:
        return lo, False
    start = hi - limit
    nl = b.find(b"\n", start - 1, hi)
    return (nl + 1 if nl != -1 and nl + 1 < hi else _char_start(b, start)), True


def _cut_right(b: bytes, lo: int, hi: int, limit: int) -> tuple[int, bool]:
    """End of the longest prefix of ``b[lo:hi]`` within ``limit`` bytes, after a newline if one
    lies in the window."""
    if hi - lo <= limit:
        return hi, False
    end = lo + limit
    nl = b.rfind(b"\n", lo, end)
    if nl != -1:
        return nl + 1, True
    while end > lo and (b[end] & 0xC0) == 0x80:
        end -= 1
    return end, True


def _dec(b: bytes, s: int, e: int) -> str:
    return b[s:e].decode("utf-8")


def sample_id(file_id: str, task_type: str, spans: dict[str, list[int]]) -> str:
    """Deterministic id: SHA-256 over file id, task type and spans (first 32 hex chars)."""
    key = f"{file_id}\0{task_type}\0{sorted(spans.items())!r}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class _Builder:
    """Candidates of one file, grouped by task type, plus the skips."""

    def __init__(self, b: bytes, params: SplitParams, method: str):
        self.b, self.p, self.method = b, params, method
        self.by_task: dict[str, list[dict[str, Any]]] = {}
        self.skipped: list[dict[str, Any]] = []

    def skip(self, task: str, symbol: str | None, reason: str, start: int, end: int) -> None:
        self.skipped.append({"task_type": task, "symbol": symbol, "reason": reason,
                             "start": start, "end": end})

    def add(self, task: str, symbol: str | None, kind: str | None,
            spans: dict[str, list[int]], cut: str | None, fim_mode: str | None = None) -> None:
        """A candidate: spans only. Its strings are cut from the source by ``materialize`` once it
        is picked (most candidates of a large file are not, measured: bench/split_speed.py)."""
        self.by_task.setdefault(task, []).append({
            "task_type": task, "symbol": symbol, "symbol_kind": kind, "spans": spans, "cut": cut,
            "fim_mode": fim_mode, "split_method": self.method})

    def materialize(self, c: dict[str, Any]) -> dict[str, Any]:
        """Fill a picked candidate's strings from its spans."""
        b, spans = self.b, c["spans"]

        def text(name):
            return _dec(b, *spans[name]) if name in spans else None

        if c["task_type"] == "fim":
            prefix, middle, suffix = text("prefix"), text("middle"), text("suffix")
            c.update(context=None, target=None, prefix=prefix, middle=middle, suffix=suffix,
                     rendered=render_fim(prefix, middle, suffix, c["fim_mode"]))
        else:
            c.update(context=text("context") + (text("context_rest") or ""),
                     target=text("target"), prefix=None, middle=None, suffix=None,
                     rendered=None)
        return c

    def target_fits(self, task: str, symbol: str | None, start: int, end: int) -> bool:
        if end - start < self.p.min_target_bytes:
            self.skip(task, symbol, "target_too_short", start, end)
            return False
        if end - start > self.p.max_target_bytes:
            self.skip(task, symbol, "target_too_long", start, end)
            return False
        return True

    def completion(self, task: str, symbol: str | None, kind: str | None, split: int,
                   target_end: int, *, cut_target: bool = False,
                   definition: tuple[int, int] | None = None) -> None:
        """Context = the file up to ``split`` (cut from the left), target = ``b[split:target_end]``.
        ``cut_target``: cut a long target at a line instead of skipping it (fallback)."""
        p, b = self.p, self.b
        cut = None
        if cut_target and target_end - split > p.max_target_bytes:
            target_end, _ = _cut_right(b, split, target_end, p.max_target_bytes)
            cut = "target_cut"
        if not self.target_fits(task, symbol, split, target_end):
            return
        ctx_start, was_cut = _cut_left(b, 0, split, p.max_context_bytes)
        spans = {"context": [ctx_start, split], "target": [split, target_end]}
        if definition is not None:
            spans["definition"] = list(definition)
        self.add(task, symbol, kind, spans, "context_cut" if was_cut else cut)

    def fim(self, ms: int, me: int, mode: str, symbol: str | None) -> None:
        """A FIM sample with middle ``b[ms:me]``; prefix and suffix cut to ``fim_max_bytes``."""
        p, b = self.p, self.b
        budget = max(p.fim_max_bytes - (me - ms), 0)
        # half the budget each side; a side that needs less leaves the rest to the other
        p0, cut_p = _cut_left(b, 0, ms, max(budget // 2, budget - (len(b) - me)))
        s1, cut_s = _cut_right(b, me, len(b), budget - (ms - p0))
        self.add("fim", symbol, None, {"prefix": [p0, ms], "middle": [ms, me], "suffix": [me, s1]},
                 "fim_cut" if (cut_p or cut_s) else None, fim_mode=mode)


def _function_samples(bld: _Builder, d: Definition, python: bool) -> None:
    body = d.body
    start = body.start_byte
    if python and d.docstring is not None:
        rest = [n for n in body.named_children if n.start_byte >= d.docstring.end_byte]
        if not rest:
            return bld.skip("function_completion", d.qualname, "empty_body", start, body.end_byte)
        start = rest[0].start_byte
    bld.completion("function_completion", d.qualname, d.kind, start, body.end_byte,
                   definition=(d.start, d.end))


def _class_samples(bld: _Builder, c: Definition, methods: list[Definition]) -> None:
    if len(methods) >= 2:
        bld.completion("class_completion", c.qualname, "class", methods[0].end, c.node.end_byte,
                       definition=(c.start, c.end))


def _docstring_samples(bld: _Builder, d: Definition) -> None:
    b, limit = bld.b, bld.p.max_context_bytes
    if d.docstring is not None:  # Python: remove the docstring's lines from the definition
        c0, c1 = d.docstring.start_byte, d.docstring.end_byte
        line_start = b.rfind(b"\n", 0, c0) + 1
        nl = b.find(b"\n", c1)
        line_end = len(b) if nl == -1 else nl + 1
        if b[line_start:c0].strip() or b[c1:line_end].strip():
            return bld.skip("docstring", d.qualname, "docstring_shares_line", c0, c1)
        if not bld.target_fits("docstring", d.qualname, c0, c1):
            return
        head = line_start - d.start
        rest_end, cut = _cut_right(b, line_end, d.end, max(limit - head, 0))
        spans = {"context": [d.start, line_start], "context_rest": [line_end, rest_end],
                 "target": [c0, c1], "definition": [d.start, d.end]}
        bld.add("docstring", d.qualname, d.kind, spans, "context_cut" if cut else None)
    elif d.doc_comments:  # the definition (which starts below its comments) → the comments
        c0, c1 = d.doc_comments[0].start_byte, d.doc_comments[-1].end_byte
        while c1 > c0 and b[c1 - 1] in b"\r\n":  # Rust line comments hold their newline
            c1 -= 1
        if not bld.target_fits("docstring", d.qualname, c0, c1):
            return
        end, cut = _cut_right(b, d.start, d.end, limit)
        bld.add("docstring", d.qualname, d.kind,
                {"context": [d.start, end], "target": [c0, c1], "definition": [d.start, d.end]},
                "context_cut" if cut else None)


_NOT_MIDDLE = ("comment", "line_comment", "block_comment", "ERROR")


def _fim_samples(bld: _Builder, root, rng: random.Random, defs: list[Definition]) -> None:
    """Up to ``fim_per_file`` FIM samples with distinct middles (see the module docstring)."""
    p, b = bld.p, bld.b
    used: set[tuple[int, int]] = set()
    for _ in range(p.fim_per_file):
        mode = "spm" if rng.random() < p.fim_spm_rate else "psm"
        for _attempt in range(4):
            offset = rng.randrange(len(b))
            node = root.named_descendant_for_byte_range(offset, offset)
            while node is not None and node.id != root.id and (
                    node.end_byte - node.start_byte < p.fim_min_middle_bytes
                    or node.type in _NOT_MIDDLE):
                node = node.parent
            if node is None or node.id == root.id or node.has_error:
                continue
            span = (node.start_byte, node.end_byte)
            if span[1] - span[0] > p.fim_max_middle_bytes or span in used:
                continue
            used.add(span)
            inside = [d.qualname for d in defs if d.start <= span[0] and span[1] <= d.end]
            bld.fim(span[0], span[1], mode, inside[-1] if inside else None)
            break
        else:
            bld.skip("fim", None, "no_middle_node", 0, len(b))


def _fallback(bld: _Builder) -> None:
    """Line-based samples at blank-line boundaries (see the module docstring)."""
    b, p = bld.b, bld.p
    starts = [0] + [m.end() for m in _NEWLINE.finditer(b) if m.end() < len(b)]
    blank = [not b[s:e].strip() for s, e in zip(starts, starts[1:] + [len(b)])]
    points = [starts[i] for i in range(1, len(starts)) if blank[i - 1] and not blank[i]]
    if not points and len(starts) >= 2:  # no paragraphs: the line start nearest the middle
        points = [min(starts[1:], key=lambda s: abs(s - len(b) // 2))]
    k = min(p.fallback_samples, len(points))
    chosen = sorted({points[(i * len(points)) // k] for i in range(k)}) if k else []
    for point in chosen:
        after = [q for q in points if q > point]
        bld.completion(FALLBACK_TASK, None, None, point, after[0] if after else len(b),
                       cut_target=True)


def _anchor(sample: dict[str, Any]) -> tuple[int, int]:
    """Where a sample sits in its file: its target's (or middle's) span."""
    spans = sample["spans"]
    return tuple(spans.get("target") or spans["middle"])


def _capped(bld: _Builder, rng: random.Random) -> list[dict[str, Any]]:
    """Round-robin over task types (each shuffled), up to the cap; the rest are skipped."""
    queues = []
    for task in sorted(bld.by_task):
        items = list(bld.by_task[task])
        rng.shuffle(items)
        queues.append(items)
    picked: list[dict[str, Any]] = []
    while any(queues):
        for q in queues:
            if q:
                item = q.pop(0)
                if len(picked) < bld.p.max_samples_per_file:
                    picked.append(item)
                else:
                    span = next(iter(item["spans"].values()))
                    bld.skip(item["task_type"], item["symbol"], "over_file_cap", *span)
    order = {t: i for i, t in enumerate((*TASKS, FALLBACK_TASK))}
    picked.sort(key=lambda s: (order[s["task_type"]], _anchor(s)))
    return picked


def _ast_candidates(bld: _Builder, tree, gid: str, rng: random.Random,
                    deadline: float) -> None:
    p = bld.p
    python = SYNTAX[gid].docstrings
    defs = definitions(tree, bld.b, gid, deadline)
    methods: dict[int, list[Definition]] = {}
    for d in defs:  # methods of each class, in source order
        if d.kind == "method" and d.parent is not None and d.parent.kind == "class":
            methods.setdefault(d.parent.node.id, []).append(d)
    for d in defs:
        if time.monotonic() > deadline:
            raise ParseRefused("split_timeout", f"not split within split_timeout_s="
                                                f"{p.split_timeout_s}")
        if d.node.has_error or d.body is None:
            for task in ("function_completion", "docstring"):
                if task in p.tasks:
                    bld.skip(task, d.qualname, "syntax_error" if d.node.has_error else "no_body",
                             d.start, d.end)
            continue
        if d.kind != "class" and "function_completion" in p.tasks:
            _function_samples(bld, d, python)
        if d.kind == "class" and "class_completion" in p.tasks:
            _class_samples(bld, d, methods.get(d.node.id, []))
        if "docstring" in p.tasks:
            _docstring_samples(bld, d)
    if "fim" in p.tasks and bld.b and rng.random() < p.fim_rate:
        if contains_special_tokens(bld.b.decode("utf-8")):
            bld.skip("fim", None, "special_tokens_in_source", 0, len(bld.b))
        else:
            _fim_samples(bld, tree.root_node, rng, defs)


def split_file(text: str, language: str | None, path: str, file_id: str,
               params: SplitParams = SplitParams()) -> FileSplit:
    """Split one file (module docstring). Raises nothing for bad input: bounds become ``refused``."""
    b = text.encode("utf-8")
    gid = grammar_name(language, path)
    rng = random.Random(f"{params.seed}\0{file_id}")  # str seeds hash with SHA-512: stable
    deadline = time.monotonic() + params.split_timeout_s
    status, bld = "no_grammar", None
    if gid is not None:
        bounds = dict(timeout_s=params.parse_timeout_s, max_bytes=params.max_parse_bytes,
                      max_nesting=params.max_nesting)
        try:
            tree = parse(b, gid, **bounds)
            if tree.root_node.has_error and gid == "c" and path.lower().endswith(".h"):
                # a C++ header named .h: the C++ grammar is a superset, take it if it parses
                retry = parse(b, "cpp", **bounds)
                if not retry.root_node.has_error:
                    tree, gid = retry, "cpp"
            status = "error" if tree.root_node.has_error else "ok"
            bld = _Builder(b, params, "ast")
            _ast_candidates(bld, tree, gid, rng, deadline)
        except ParseRefused as exc:
            return FileSplit(parse_status=exc.reason, refused=str(exc))
    if bld is None or not bld.by_task:
        skipped = bld.skipped if bld is not None else []
        bld = _Builder(b, params, "fallback")
        bld.skipped = skipped
        _fallback(bld)
    samples = [bld.materialize(c) for c in _capped(bld, rng)]
    for s in samples:
        s["sample_id"] = sample_id(file_id, s["task_type"], s["spans"])
    out = FileSplit(parse_status=status, split_method=bld.method, samples=samples,
                    skipped=bld.skipped)
    if not samples:
        out.drop_reason = "unsplittable" if b.count(b"\n", 0, len(b.rstrip())) == 0 \
            else "no_samples"
    return out

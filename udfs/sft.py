"""From one gold.samples row to its SFT records: ChatML messages, augmentations, quality score.

Tasks made from each sample task type (instruction templates: ``udfs.instructions``):

=====================  ==============================================================================
sample task            SFT records
=====================  ==============================================================================
function_completion    ``function_completion`` (file up to the body → body); from the definition:
                       ``add_comments`` (comments stripped → original), ``refactor`` (locals renamed
                       ``var_0``… → original), ``debug`` (one operator swapped → original),
                       ``type_hints`` (Python, annotations stripped → original),
                       ``implement_from_spec`` (when documented: name, parameters and the first
                       sentence of its docs → the definition)
class_completion       ``class_completion``
docstring              ``docstring`` (code → its docs) and ``explain`` (code → the docs' prose)
fim, fim_repo          ``fim`` as chat: the file with ``<FILL_ME>`` at the middle → the middle
line_completion        ``line_completion``
=====================  ==============================================================================

``write_tests`` records pair a function with a test of its repository that calls it; they need
two samples at once and are built in ``jobs.build_sft``, rendered by ``tool_call_record`` as an
OpenAI-style ``write_file`` tool call.

An augmentation whose result does not parse is not emitted; it is returned as a skip with reason
``augment_unparseable`` (or ``definition_unparseable`` when the definition cut from its file does
not parse on its own; nothing to change is not a skip). Code answers are fenced Markdown blocks; prose answers (explain) are plain.

**Quality score** q ∈ [0, 1], a weighted mean of signals (weights in ``QUALITY_WEIGHTS``):

* ``alpha`` — the filter's alphabetic fraction, 0 at the filter's floor 0.25, 1 from 0.75 up;
* ``lines`` — longest line: 1 up to 100 characters (StarCoder2's average-line limit), 0 at 1,000;
* ``docs`` — 1 if the sample's symbol is documented (docstring or doc comment), else 0;
* ``comments`` — share of comment lines in the target, full marks from 10 % up;
* ``length`` — target lines: 1 for 3–60 lines, 0.5 for 1–2, falling linearly to 0.3 at 300;
* ``parse`` — 1 for a clean tree, 0.6 for a tree with errors elsewhere, 0.3 for fallback splits;

times 0.9 when the sample was cut. **Weight** = exp(5·(q − 0.7)) (seed 002, improvement 5, and
the issue): q 0.7 → 1.0, 0.9 → 2.7, 1.0 → 4.5. (The seed's comments list 0.9 → 7.4 and 1.0 → 20.1,
which is exp(10·(q − 0.7)); its code, which we follow, says 5.) ``jobs.build_sft`` then normalizes
weights to mean 1 over the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from udfs.augment import (
    Unparseable,
    dedent_definition,
    inject_bug,
    rename_locals,
    strip_comments,
    strip_type_hints,
)
from udfs.instructions import FILL_MARK, LANGUAGE_NAMES, Templates, code_block, doc_text, purpose
from udfs.syntax import ParseRefused, grammar_name, parse_snippet, python_docstring

QUALITY_WEIGHTS = {"alpha": 0.25, "lines": 0.15, "docs": 0.2, "comments": 0.15, "length": 0.1,
                   "parse": 0.15}


def _clip(x: float) -> float:
    return max(0.0, min(1.0, x))


def comment_fraction(code: str, language: str | None) -> float:
    lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    marks = ("#",) if language == "python" else ("//", "/*", "*")
    return sum(ln.startswith(marks) for ln in lines) / len(lines)


def quality_score(signals: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """(q, parts) from a sample's signals; see the module docstring."""
    alpha = signals.get("alpha_fraction")
    longest = signals.get("max_line_length")
    target = signals.get("target") or ""
    n = target.count("\n") + 1 if target else 0
    parts = {
        "alpha": 0.5 if alpha is None else _clip((alpha - 0.25) / 0.5),
        "lines": 0.5 if longest is None else _clip(1 - (longest - 100) / 900),
        "docs": 1.0 if signals.get("documented") else 0.0,
        "comments": _clip(comment_fraction(target, signals.get("language")) / 0.1),
        "length": (1.0 if 3 <= n <= 60 else 0.5 if n < 3
                   else max(0.3, 1 - 0.7 * (n - 60) / 240)),
        "parse": (0.3 if signals.get("split_method") == "fallback"
                  else 1.0 if signals.get("parse_status") == "ok" else 0.6),
    }
    q = sum(QUALITY_WEIGHTS[k] * v for k, v in parts.items())
    if signals.get("cut"):
        q *= 0.9
    return round(q, 6), parts


def raw_weight(q, exp=math.exp):
    """A record's weight before normalization: exp(5·(q − 0.7)), 1 at quality 0.7, e at 0.9.
    gold.sft's ``weight`` is this over its mean over the table. ``q``/``exp`` may be a Spark
    column and ``pyspark.sql.functions.exp``: the build_sft stage computes the formula here."""
    return exp(5 * (q - 0.7))


def _span(spans: dict, name: str) -> tuple[int, int] | None:
    v = spans.get(name)
    return (int(v[0]), int(v[1])) if v is not None else None


def definition_of(sample: dict[str, Any]) -> tuple[str, str] | None:
    """(definition code dedented, text before it in the file) for completion samples whose context
    reaches back to the definition's start; None otherwise."""
    spans = sample.get("spans") or {}
    ctx, tgt, dfn = _span(spans, "context"), _span(spans, "target"), _span(spans, "definition")
    if None in (ctx, tgt, dfn) or dfn[0] < ctx[0] or dfn[1] > tgt[1]:
        return None
    full = ((sample.get("context") or "") + (sample.get("target") or "")).encode()
    start, end = dfn[0] - ctx[0], dfn[1] - ctx[0]
    line_start = full.rfind(b"\n", 0, start) + 1
    before = full[:start].decode("utf-8")
    code = dedent_definition(full[start:end].decode("utf-8"),
                             full[line_start:start].decode("utf-8"))
    return code, before


def definition_docs(code: str, before: str, language: str | None) -> str | None:
    """The definition's docstring (Python, from its syntax tree) or the doc comment right above it
    (the comment block that ends ``before``; read line by line from the end, no regex over the
    file: a backtracking pattern took seconds per sample on C files with long // runs)."""
    if language == "python":
        b = code.encode()
        try:
            tree = parse_snippet(b, "python")
        except ParseRefused:
            return None
        node = tree.root_node.named_children[0] if tree.root_node.named_child_count else None
        while node is not None and node.type == "decorated_definition":
            node = node.child_by_field_name("definition")
        if node is None or node.type not in ("function_definition", "class_definition"):
            return None
        doc = python_docstring(node.child_by_field_name("body"))
        return b[doc.start_byte:doc.end_byte].decode() if doc is not None else None
    lines = before.rstrip().split("\n")[-200:]
    if not lines or not lines[-1].strip():
        return None
    if lines[-1].strip().endswith("*/"):
        text = "\n".join(lines)
        start = text.rfind("/*")
        block = text[start:].strip() if start >= 0 else ""
        return block if block.startswith("/**") else None
    run = []
    for line in reversed(lines):
        if not line.strip().startswith("//"):
            break
        run.append(line.strip())
    return "\n".join(reversed(run)) or None


def meta_of(sample: dict[str, Any], docs: str | None = None) -> dict[str, str]:
    symbol = sample.get("symbol") or ""
    return {"language": LANGUAGE_NAMES.get(sample.get("language") or "", sample.get("language")),
            "name": symbol.rsplit(".", 1)[-1], "qualname": symbol,
            "kind": sample.get("symbol_kind") or "", "path": sample.get("path") or "",
            "purpose": purpose(docs) or "", "params": ""}


# what follows a definition's name up to its parameters' "(": optional generics, spaces
_AFTER_NAME = re.compile(r"\s*(<[^>(]*>)?\s*\(")


def _open_paren(code: str, name: str) -> int | None:
    r"""Where the ``(`` of the first ``name (…`` or ``name<T> (…`` in ``code`` is: the regex
    ``\bNAME\s*(<[^>(]*>)?\s*\(``, with the name found by ``str.find`` and the rest by one
    compiled pattern: every definition has its own name, and compiling a pattern per name cost
    more than the rest of the record."""

    def word(c: str) -> bool:
        return c.isalnum() or c == "_"

    at = code.find(name)
    while at >= 0:
        if word(code[at - 1] if at else " ") != word(name[0]):  # a word boundary
            m = _AFTER_NAME.match(code, at + len(name))
            if m is not None:
                return m.end() - 1
        at = code.find(name, at + 1)
    return None


def _params(code: str, name: str) -> str:
    """The parameter list as written: the balanced (...) right after the name in the signature."""
    start = _open_paren(code, name) if name else None
    if start is None:
        return ""
    depth = 0
    for i in range(start, min(len(code), start + 2000)):
        depth += {"(": 1, ")": -1}.get(code[i], 0)
        if depth == 0:
            return " ".join(code[start:i + 1].split())
    return ""


def record_id(sample_id: str, task: str) -> str:
    return hashlib.sha256(f"{sample_id}\0{task}".encode()).hexdigest()[:32]


def chat(system: str, user: str, assistant: str,
         tool_calls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """ChatML messages: system, user, assistant (with OpenAI-style tool calls when given)."""
    msgs = [{"role": "system", "content": system, "tool_calls": None},
            {"role": "user", "content": user, "tool_calls": None},
            {"role": "assistant", "content": assistant, "tool_calls": tool_calls}]
    return msgs if system else msgs[1:]


def validate_tool_calls(calls: list[dict[str, Any]]) -> None:
    """Raise ValueError unless every call is ``{id, type: function, function: {name, arguments}}``
    with ``arguments`` a JSON object encoded as a string (OpenAI's format)."""
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or set(call) != {"id", "type", "function"}:
            raise ValueError(f"tool_calls[{i}]: keys must be id, type, function")
        if call["type"] != "function" or not call["id"]:
            raise ValueError(f"tool_calls[{i}]: type must be 'function' with a non-empty id")
        fn = call["function"]
        if not isinstance(fn, dict) or set(fn) != {"name", "arguments"} or not fn["name"]:
            raise ValueError(f"tool_calls[{i}].function: needs name and arguments")
        try:
            args = json.loads(fn["arguments"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"tool_calls[{i}].function.arguments: not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise ValueError(f"tool_calls[{i}].function.arguments: must encode a JSON object")


AUGMENTATIONS = frozenset({"add_comments", "refactor", "debug", "type_hints",
                           "implement_from_spec", "explain", "write_tests"})


def build_records(sample: dict[str, Any], templates: Templates,
                  signals: dict[str, Any] | None = None,
                  augmentations: frozenset[str] = AUGMENTATIONS) -> tuple[list[dict], list[dict]]:
    """(records, skips) for one sample. A record: sft_id, task_type, messages, quality,
    quality_parts. ``augmentations``: the extra task types to make."""
    signals = dict(signals or {})
    task = sample["task_type"]
    lang = sample.get("language")
    gid = grammar_name(lang, sample.get("path") or "")
    sid = sample["sample_id"]
    system = templates.system_prompt
    records: list[dict] = []
    skips: list[dict] = []
    found = definition_of(sample) if task in ("function_completion", "class_completion") else None
    docs = None
    if found is not None:
        docs = definition_docs(found[0], found[1], lang)
    elif task == "docstring":
        docs = sample.get("target")
    meta = meta_of(sample, docs)
    if found is not None:
        meta["params"] = _params(found[0], meta["name"])
    q, parts = quality_score({**signals, "documented": bool(docs), "target": sample.get("target"),
                              "language": lang, "split_method": sample.get("split_method"),
                              "parse_status": sample.get("parse_status"),
                              "cut": sample.get("cut")})

    def add(kind: str, user_code: str | None, answer: str, prose: bool = False,
            extra: str = "") -> None:
        instruction = templates.render(kind, sid, meta)
        user = instruction + extra + ("\n\n" + code_block(user_code, lang) if user_code else "")
        assistant = answer if prose else code_block(answer, lang)
        records.append({"sft_id": record_id(sid, kind), "task_type": kind,
                        "messages": chat(system, user, assistant), "quality": q,
                        "quality_parts": parts})

    if task in ("function_completion", "class_completion", "line_completion"):
        add(task, sample.get("context"), sample.get("target") or "")
    elif task == "docstring":
        add("docstring", sample.get("context"), sample.get("target") or "")
        prose = doc_text(sample.get("target") or "")
        if prose and "explain" in augmentations:
            add("explain", sample.get("context"), prose, prose=True)
    elif task in ("fim", "fim_repo"):
        hole = (sample.get("prefix") or "") + FILL_MARK + (sample.get("suffix") or "")
        add("fim", hole, sample.get("middle") or "")
    if task == "function_completion" and found is not None and gid is not None:
        code = found[0]
        kind = sample.get("symbol_kind") or "function"
        for aug, make in (("add_comments", lambda: strip_comments(code, gid, kind)),
                          ("refactor", lambda: _first(rename_locals(code, gid, kind))),
                          ("debug", lambda: _first(inject_bug(code, gid, sid, kind))),
                          ("type_hints", lambda: strip_type_hints(code, gid, kind))):
            if aug not in augmentations:
                continue
            out, reason = _attempt(make)
            if out is not None:
                add(aug, out, code)
            elif reason:
                skips.append({"task_type": aug, "reason": reason})
        if docs and meta["purpose"] and "implement_from_spec" in augmentations:
            add("implement_from_spec", None, code)
    return records, skips


def _first(pair):
    return pair[0] if pair else pair


def _attempt(make) -> tuple[str | None, str | None]:
    """Run one augmentation: (code, None), (None, None) if it had nothing to change, or
    (None, reason) if it failed."""
    try:
        out = make()
    except Unparseable as exc:
        return None, exc.reason
    except Exception as exc:  # noqa: BLE001 - an augmentation must not lose the sample
        return None, f"augment_error: {type(exc).__name__}"
    return out, None


def tool_call_record(function_sample: dict[str, Any], test_code: str, test_path: str,
                     templates: Templates, quality: float) -> dict[str, Any]:
    """A ``write_tests`` record: the assistant writes the test through a ``write_file`` call."""
    meta = meta_of(function_sample)
    found = definition_of(function_sample)
    code = found[0] if found else (function_sample.get("context") or "")[-2000:]
    sid = function_sample["sample_id"]
    call_id = "call_" + record_id(sid, "write_tests")[:12]
    calls = [{"id": call_id, "type": "function",
              "function": {"name": "write_file",
                           "arguments": json.dumps({"path": test_path, "content": test_code},
                                                   ensure_ascii=False)}}]
    validate_tool_calls(calls)
    user = templates.render("write_tests", sid, meta) + "\n\n" + code_block(
        code, function_sample.get("language"))
    answer = f"I'll add the test to `{test_path}`."
    return {"sft_id": record_id(sid, "write_tests"), "task_type": "write_tests",
            "messages": chat(templates.system_prompt, user, answer, calls), "quality": quality}


COMMIT_TASKS = ("commit_edit", "commit_diff")


def _heading(path: str, line: int | None, status: str | None = None) -> str:
    if status == "added":
        return f"`{path}` (new file):"
    return f"`{path}` line {line}:" if line else f"`{path}`:"


def commit_record(commit: dict[str, Any], templates: Templates,
                  tasks: tuple[str, ...] = COMMIT_TASKS) -> dict[str, Any]:
    """The SFT record of one silver.commits row: its message as the task, the changed regions
    before the change as the context, and as the answer the regions after it (``commit_edit``)
    or the unified diff (``commit_diff``). Which of ``tasks``: by a hash of the commit, so
    reruns pick the same. Quality: ``udfs.commits.commit_quality``."""
    from udfs.commits import commit_quality

    key = f"{commit['repo']}\0{commit['commit_id']}"
    digest = hashlib.sha256(key.encode()).digest()
    task = tasks[int.from_bytes(digest[:8], "big") % len(tasks)]
    files = commit["files"]
    meta = {"message": commit["message"], "language": LANGUAGE_NAMES.get(
        commit["language"] or "", commit["language"]), "path": files[0]["path"] if files else None}
    context, answer = [], []
    for f in files:
        for h in f["hunks"] or []:
            if f["status"] != "added":
                context.append(_heading(f["path"], h["old_start"]) + "\n"
                               + code_block(h["before"], f["language"]))
            if f["status"] == "deleted":
                continue
            answer.append(_heading(f["path"], h["new_start"], f["status"]) + "\n"
                          + code_block(h["after"], f["language"]))
        if f["status"] == "deleted":
            answer.append(f"Delete `{f['path']}`.")
    user = templates.render(task, key, meta)
    if context:
        user += "\n\n" + "\n\n".join(context)
    if task == "commit_diff":
        patch = "".join(f["diff"] for f in files)
        fence = "```"
        while fence in patch:
            fence += "`"
        assistant = f"{fence}diff\n{patch.rstrip()}\n{fence}"
    else:
        assistant = "\n\n".join(answer)
    return {"sft_id": record_id(key, task), "task_type": task,
            "messages": chat(templates.system_prompt, user, assistant),
            "quality": commit_quality(commit)}


def chat_record(conversation: dict[str, Any]) -> dict[str, Any]:
    """The SFT record of one silver.chats row: its messages as they are (its own system turn, if
    any; none is added). Quality: ``udfs.chats.chat_quality``."""
    from udfs.chats import chat_quality

    return {"sft_id": record_id(conversation["chat_id"], "chat"), "task_type": "chat",
            "messages": conversation["messages"],
            "quality": chat_quality(conversation["messages"])}


def mixture_counts(rows: dict[str, int], shares: dict[str, float]) -> dict[str, int]:
    """How many rows of each source to keep so that the kept rows' shares are ``shares``:
    the largest total that no source runs short of, each source's count rounded down. A source
    without rows is left out and the other shares scaled up to 1; a source not in ``shares`` keeps
    none. E.g. rows {code: 900, git: 50, chat: 300}, shares {code: .7, git: .1, chat: .2}: git
    allows a total of 500, so code 350, git 50, chat 100."""
    present = {s: n for s, n in rows.items() if n > 0}
    named = {s: shares.get(s, 0.0) for s in present}
    total = sum(named.values())
    if total <= 0:
        return {s: 0 for s in rows}
    scaled = {s: v / total for s, v in named.items()}
    most = min(present[s] / p for s, p in scaled.items() if p > 0)
    out = {s: min(present[s], math.floor(most * p + 1e-9)) for s, p in scaled.items()}
    return {s: out.get(s, 0) for s in rows}

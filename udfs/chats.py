"""Chat exports → gold.sft's ChatML messages (the executor side of ``jobs.chats``).

**Shapes** (``format: auto`` tells them apart per record, by their key):

* ``messages`` — OpenAI-style: ``{"messages": [{"role", "content", "tool_calls"?}, …]}``. Roles
  ``system``, ``user``, ``assistant``, ``tool`` (``developer`` is read as ``system``, the legacy
  ``function`` as ``tool``); ``content`` a string, null, or a list of ``{"type": "text", "text"}``
  parts; ``tool_calls`` OpenAI's ``{id, type: function, function: {name, arguments}}`` (arguments
  a JSON string, or an object that is encoded); a legacy ``function_call`` becomes one tool call.
* ``sharegpt`` — ``{"conversations": [{"from", "value"}, …], "system"?}``: ``human``/``user`` →
  user, ``gpt``/``assistant``/``chatgpt``/``bard``/``model`` → assistant, ``system`` → system,
  ``function_call`` (its value the call as JSON) → an assistant tool call, ``observation``/
  ``tool``/``function_response`` → tool.

A file is JSONL (one record per line; locator ``<file>:<line>``, 1-based) or one JSON document: an
array of records (``<file>#item=<n>``, 0-based) or a single record.

**Quarantined** (the record cannot be read as a conversation): ``invalid_json`` (nested too
deeply included), ``invalid_text`` (a lone surrogate), ``not_an_object``, ``unknown_shape`` (neither key, or the other shape's key under a fixed
``format``), ``invalid_message`` (a turn that is not an object, a missing or non-text role or
content, a non-text content part), ``unknown_role``, ``invalid_tool_call``.

**Dropped** (a conversation, but not a training example): ``empty_conversation`` (no turn with
content), ``one_sided`` (no user turn or no assistant turn), ``empty_answer`` (an assistant turn
with neither content nor tool calls); ``duplicate_conversation`` (the same normalized messages
seen before) is decided across the whole input in ``jobs.chats``. Trailing turns after the last
assistant turn (a question nobody answered) are cut.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from udfs.languages import normalize_language
from udfs.redaction import redact


class ChatError(ValueError):
    """A record that cannot be read as a conversation; ``str()`` is the quarantine reason."""


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool", "function": "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant",
                  "model": "assistant", "claude": "assistant", "system": "system",
                  "observation": "tool", "tool": "tool", "function_response": "tool",
                  "function": "tool", "function_call": "function_call"}


def records_of(content: bytes, source: str) -> Iterator[tuple[str, str | None, str | None]]:
    """(locator, record text, error) of each record of a chat file: a JSON document that is an
    array (one record per item) or an object (one record), else JSONL (blank lines skipped).
    Text that is not UTF-8 is an error (``invalid_utf8``) of its own line, without text; the
    file's other lines are read."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.lstrip()[:1] in ("[", "{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):  # JSONL, or broken: read line by line below
            doc = None
        if isinstance(doc, list):
            for i, item in enumerate(doc):
                yield f"{source}#item={i}", record_text(item), None
            return
        if isinstance(doc, dict) and "\n" in text.strip():  # one pretty-printed record
            yield f"{source}#item=0", record_text(doc), None
            return
    lines = content.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    for n, raw in enumerate(lines, start=1):
        if raw.strip():
            yield f"{source}:{n}", *decode_line(raw)


def decode_line(raw: bytes) -> tuple[str | None, str | None]:
    """(text, None) of one JSONL line, or (None, the ``invalid_utf8`` error) for one that is not
    UTF-8, which fails alone."""
    try:
        return raw.decode("utf-8").rstrip("\r"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid_utf8: {exc.reason} at byte {exc.start}"


_NUMBER = "0123456789.eE+-"


def array_items(stream, chunk: int = 1 << 23, max_item: int = 1 << 26) -> Iterator[Any]:
    """The items of the JSON array that a binary ``stream`` holds, parsed one at a time, so a file
    of any size is read in ``chunk``-sized reads with one item in memory. Raises ValueError
    (``json.JSONDecodeError``, ``UnicodeDecodeError``) where the array breaks off or turns
    invalid, or when an item exceeds ``max_item`` characters.

    Hand-written over ``json.JSONDecoder.raw_decode`` rather than ijson: each item is parsed by
    the same ``json`` module as a file read whole, so both paths decide alike. ijson's C backend
    turns a lone surrogate escape (``\\ud800``) into "?" (the whole-file path quarantines the
    record), and its Python backend reads about 3 MB/s here."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    parse = json.JSONDecoder().raw_decode
    buf, pos, eof = "", 0, False

    def more() -> None:
        nonlocal buf, pos, eof
        data = stream.read(chunk)
        eof = not data
        buf = buf[pos:] + decoder.decode(data, final=eof)
        pos = 0

    def next_char() -> str:  # the next non-blank character, "" at the end of the stream
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or eof:
                return buf[pos] if pos < len(buf) else ""
            more()

    if next_char() != "[":
        raise json.JSONDecodeError("not a JSON array", buf, pos)
    pos += 1
    if next_char() == "]":
        return
    while True:
        next_char()
        while True:
            try:
                item, end = parse(buf, pos)
                # a number cut by the read ("0." of "0.25") parses as a shorter one
                if eof or not isinstance(item, (int, float)) or buf[end:].lstrip(_NUMBER):
                    break
            except json.JSONDecodeError:
                if eof:
                    raise
            if len(buf) - pos > max_item:
                raise ValueError(f"an item of over {max_item} characters")
            more()
        pos = end
        yield item
        sep = next_char()
        if sep == "]":
            return
        if sep != ",":
            raise json.JSONDecodeError("expected ',' or ']'", buf, pos)
        pos += 1


def record_text(item: Any) -> str:
    """A parsed record as JSON text again, its characters as they are; one holding a lone
    surrogate (a ``\\ud800`` escape) keeps it escaped, since no UTF-8 text can hold it and
    ``normalize`` then names it (``invalid_text``)."""
    text = json.dumps(item, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(item)
    return text


def _text_content(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text",
                                                               "output_text"):
                parts.append(str(part.get("text") or ""))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ChatError(f"invalid_message: {where} has a non-text content part ({kind})")
        return "".join(parts)
    raise ChatError(f"invalid_message: {where}.content is {type(content).__name__}")


def _tool_call(call: Any, where: str, index: int) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise ChatError(f"invalid_tool_call: {where} is not an object")
    fn = call.get("function", call)  # a legacy function_call is the function itself
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ChatError(f"invalid_tool_call: {where} has no function name")
    args = fn.get("arguments", "{}")
    if isinstance(args, str):
        try:
            decoded = json.loads(args) if args.strip() else {}
        except ValueError:
            raise ChatError(f"invalid_tool_call: {where}.arguments is not JSON") from None
    else:
        decoded = args
    if not isinstance(decoded, dict):
        raise ChatError(f"invalid_tool_call: {where}.arguments is not a JSON object")
    return {"id": str(call.get("id") or f"call_{index}"), "type": "function",
            "function": {"name": fn["name"], "arguments": json.dumps(decoded,
                                                                     ensure_ascii=False)}}


def _turn(role: str, content: str, tool_calls=None) -> dict[str, Any]:
    return {"role": role, "content": content, "tool_calls": tool_calls or None}


def _from_messages(turns: Any) -> list[dict[str, Any]]:
    if not isinstance(turns, list):
        raise ChatError("invalid_message: messages is not a list")
    out, calls = [], 0
    for i, m in enumerate(turns):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ChatError(f"invalid_message: {where} is not an object")
        role = m.get("role")
        if not isinstance(role, str):
            raise ChatError(f"invalid_message: {where} has no role")
        if role.lower() not in ROLES:
            raise ChatError(f"unknown_role: {role[:40]}")
        raw_calls = m.get("tool_calls") or ([m["function_call"]] if m.get("function_call")
                                            else [])
        if not isinstance(raw_calls, list):
            raise ChatError(f"invalid_tool_call: {where}.tool_calls is not a list")
        tool_calls = []
        for j, c in enumerate(raw_calls):
            tool_calls.append(_tool_call(c, f"{where}.tool_calls[{j}]", calls))
            calls += 1
        out.append(_turn(ROLES[role.lower()], _text_content(m.get("content"), where), tool_calls))
    return out


def _from_sharegpt(turns: Any, system: Any) -> list[dict[str, Any]]:
    if not isinstance(turns, list):
        raise ChatError("invalid_message: conversations is not a list")
    out = [_turn("system", system)] if isinstance(system, str) and system.strip() else []
    for i, m in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(m, dict):
            raise ChatError(f"invalid_message: {where} is not an object")
        who = m.get("from")
        if not isinstance(who, str):
            raise ChatError(f"invalid_message: {where} has no 'from'")
        role = SHAREGPT_ROLES.get(who.lower())
        if role is None:
            raise ChatError(f"unknown_role: {who[:40]}")
        value = m.get("value")
        if value is not None and not isinstance(value, str):
            raise ChatError(f"invalid_message: {where}.value is {type(value).__name__}")
        if role == "function_call":
            try:
                call = json.loads(value or "")
            except ValueError:
                raise ChatError(f"invalid_tool_call: {where}.value is not JSON") from None
            out.append(_turn("assistant", "", [_tool_call(call, where, i)]))
        else:
            out.append(_turn(role, value or ""))
    return out


def normalize(record: str, fmt: str = "auto") -> tuple[list[dict[str, Any]], str]:
    """(ChatML messages, shape) of one record. Raises ChatError (the quarantine reason)."""
    try:
        obj = json.loads(record)
    except ValueError as exc:
        raise ChatError(f"invalid_json: {exc}") from None
    except RecursionError:
        raise ChatError("invalid_json: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ChatError(f"not_an_object: {type(obj).__name__}")
    if "messages" in obj and fmt in ("auto", "messages"):
        return _valid_text(_from_messages(obj["messages"])), "messages"
    if "conversations" in obj and fmt in ("auto", "sharegpt"):
        return _valid_text(_from_sharegpt(obj["conversations"], obj.get("system"))), "sharegpt"
    want = "messages or conversations" if fmt == "auto" else (
        "messages" if fmt == "messages" else "conversations")
    raise ChatError(f"unknown_shape: no '{want}' key (keys: {', '.join(sorted(obj))[:120]})")


def _valid_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` unless a text holds what UTF-8 cannot encode (a lone surrogate from a
    ``\\ud800`` escape), which no table can store."""
    for i, m in enumerate(messages):
        texts = [m["content"] or ""] + [c["function"]["arguments"] for c in m["tool_calls"] or ()]
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ChatError(f"invalid_text: turn {i}: {exc.reason} at {exc.start}") from None
    return messages


def problem(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """(messages with unanswered trailing turns cut, drop reason or None)."""
    def said(m):
        return bool((m["content"] or "").strip()) or bool(m["tool_calls"])

    if not any(said(m) for m in messages):
        return messages, "empty_conversation"
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    # a user turn must come before the last answer: one only after it is cut with the tail
    if not answers or not any(m["role"] == "user" for m in messages[:answers[-1]]):
        return messages, "one_sided"
    messages = messages[:answers[-1] + 1]
    if any(m["role"] == "assistant" and not said(m) for m in messages):
        return messages, "empty_answer"
    return messages, None


def redact_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict]:
    """Messages with secrets and personal data replaced (``udfs.redaction``) in every content and
    tool-call argument string, and the count of each kind."""
    counts: dict[str, int] = {}

    def clean(text: str) -> str:
        out, found = redact(text)
        for k, v in found.items():
            counts[k] = counts.get(k, 0) + v
        return out

    out = []
    for m in messages:
        calls = None
        if m["tool_calls"]:
            calls = [{**c, "function": {"name": c["function"]["name"],
                                        "arguments": clean(c["function"]["arguments"])}}
                     for c in m["tool_calls"]]
        out.append({"role": m["role"], "content": clean(m["content"] or ""), "tool_calls": calls})
    return out, counts


def chat_id(messages: list[dict[str, Any]]) -> str:
    """SHA-256 (32 hex) of the normalized messages: equal conversations, equal ids."""
    blob = json.dumps([[m["role"], m["content"], m["tool_calls"]] for m in messages],
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([A-Za-z0-9_+#.-]+)", re.MULTILINE)


def chat_language(messages: list[dict[str, Any]]) -> str | None:
    """The language most of the assistant's fenced code blocks are tagged with, or None."""
    tags = Counter()
    for m in messages:
        if m["role"] == "assistant":
            for _, tag in _FENCE.findall(m["content"] or ""):
                lang = normalize_language(tag)
                if lang:
                    tags[lang] += 1
    return min(tags, key=lambda k: (-tags[k], k)) if tags else None


def chat_quality(messages: list[dict[str, Any]]) -> float:
    """q ∈ [0, 1] of a conversation, the mean of two parts: the answers' length (1 from 200
    characters of assistant text per assistant turn, linearly less below) and code (1 when an
    answer holds a fenced code block or a tool call, else 0.5)."""
    answers = [m for m in messages if m["role"] == "assistant"]
    chars = sum(len(m["content"] or "") for m in answers) / max(len(answers), 1)
    length = min(1.0, chars / 200)
    code = 1.0 if any(_FENCE.search(m["content"] or "") or m["tool_calls"] for m in answers) \
        else 0.5
    return round((length + code) / 2, 6)

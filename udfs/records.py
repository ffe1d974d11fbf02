"""Parsing and identity of ingested files: Stack-v2-style records and files read from source trees.

The record schema is the curation seed's JSONL output (``text, language, license, stars, path,
repo``; ../shared/seeds/001). A record either parses into exactly these typed fields or is rejected
with an error message that names the field, so ``jobs.ingest`` can quarantine it with the payload.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from udfs.languages import normalize_language

# field → (accepted Python types, required)
STACK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "text": ((str,), True),
    "language": ((str,), True),
    "license": ((str,), False),
    "stars": ((int,), False),
    "path": ((str,), True),
    "repo": ((str,), True),
}

# A file whose first 8 KiB hold a NUL byte is binary; git uses the same test (buffer_is_binary).
_BINARY_SNIFF_BYTES = 8192


def parse_stack_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one JSONL line into a record, or return ``(None, error)``."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return None, f"malformed_json: {exc}"
    return validate_stack_record(obj)


def validate_stack_record(obj: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Check a decoded record against ``STACK_FIELDS``; normalize license and language to lower case.

    Integers given as floats with no fraction (``120.0``, common after a pandas round trip) are
    accepted as stars; booleans are not integers here even though Python says they are.
    """
    if not isinstance(obj, dict):
        return None, f"not_an_object: got {type(obj).__name__}"
    out: dict[str, Any] = {}
    for name, (types, required) in STACK_FIELDS.items():
        value = obj.get(name)
        if value is None:
            if required:
                return None, f"missing_field: {name}"
            out[name] = None
            continue
        if name == "stars" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, types):
            expected = "/".join(t.__name__ for t in types)
            return None, f"mistyped_field: {name} should be {expected}, got {type(value).__name__}"
        out[name] = value
    if not out["text"]:
        return None, "empty_field: text"
    out["license"] = out["license"].strip().lower() if out["license"] else None
    out["language"] = normalize_language(out["language"])
    return out, None


def decode_source(content: bytes) -> tuple[str | None, str | None]:
    """Decode a source file as strict UTF-8 (a leading BOM is dropped), or return ``(None, error)``."""
    if b"\x00" in content[:_BINARY_SNIFF_BYTES]:
        return None, "binary_file: NUL byte in the first 8 KiB"
    try:
        return content.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid_utf8: {exc.reason} at byte {exc.start}"


def file_id(repo: str, path: str, content: bytes) -> str:
    """Stable id of a file: SHA-256 over ``repo NUL path NUL content`` (hex).

    ``jobs.ingest`` computes the same digest with Spark's ``sha2`` so that ids need no Python UDF;
    a test holds the two equal.
    """
    h = hashlib.sha256()
    for part in (repo.encode(), b"\x00", path.encode(), b"\x00", content):
        h.update(part)
    return h.hexdigest()


def preview(payload: str | bytes | None, limit: int) -> str | None:
    """A quarantine payload cut to ``limit`` characters; bytes are shown with replacement chars."""
    if payload is None:
        return None
    if isinstance(payload, bytes):
        payload = payload[: limit * 4].decode("utf-8", errors="replace")
    return payload if len(payload) <= limit else payload[:limit] + "…"

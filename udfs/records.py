"""Parsing and identity of ingested files: Stack-v2-style records and files read from source trees.

The record schema is the curation seed's JSONL output (``text, language, license, stars, path,
repo``; ../shared/seeds/001). A record either parses into exactly these typed fields or is rejected
with an error message that names the field, so ``jobs.ingest`` can quarantine it with the payload.
"""

from __future__ import annotations

import hashlib
import json
import math
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
_MAX_STARS = 2**63 - 1  # bronze.files' stars is a long
# Byte-order marks, longest first (UTF-32 LE's starts with UTF-16 LE's)
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def parse_stack_line(line: str, columns: dict[str, str] | None = None,
                     ) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one JSONL line into a record, or return ``(None, error)``."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return None, f"malformed_json: {exc}"
    return validate_stack_record(obj, columns)


def validate_stack_record(obj: Any, columns: dict[str, str] | None = None,
                          ) -> tuple[dict[str, Any] | None, str | None]:
    """Check a decoded record against ``STACK_FIELDS``; normalize license and language to lower case.

    ``columns`` maps a field to the record's own name for it (other corpora: The Stack's
    ``content``, ``max_stars_repo_name``, ``max_stars_count``); an error names the record's name.
    Integers given as floats with no fraction (``120.0``, common after a pandas round trip) are
    accepted as stars; booleans are not integers here even though Python says they are. A list
    of licenses (The Stack's ``detected_licenses``: every one applies) becomes the SPDX
    expression ``a AND b``.
    """
    if not isinstance(obj, dict):
        return None, f"not_an_object: got {type(obj).__name__}"
    columns = columns or {}
    out: dict[str, Any] = {}
    for field, (types, required) in STACK_FIELDS.items():
        name = columns.get(field, field)
        value = obj.get(name)
        if field == "license" and isinstance(value, list) and all(
                isinstance(v, str) for v in value):
            value = " AND ".join(v for v in value if v.strip()) or None
        if field == "stars" and isinstance(value, float) and math.isnan(value):
            value = None  # pandas' missing integer
        if value is None:
            if required:
                return None, f"missing_field: {name}"
            out[field] = None
            continue
        if field == "stars" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, types):
            expected = "/".join(t.__name__ for t in types)
            return None, f"mistyped_field: {name} should be {expected}, got {type(value).__name__}"
        if field == "stars" and not 0 <= value <= _MAX_STARS:
            shown = value if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
            return None, f"out_of_range: stars should be 0 to 2^63-1, got {shown}"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # JSON's \ud800 escapes decode to lone surrogates
                return None, (f"invalid_text: {name} holds a lone surrogate "
                              f"(U+{ord(value[exc.start]):04X}) at character {exc.start}")
        out[field] = value
    if not out["text"]:
        return None, f"empty_field: {columns.get('text', 'text')}"
    out["license"] = out["license"].strip().lower() if out["license"] else None
    out["language"] = normalize_language(out["language"])
    return out, None


def _unmarked_utf16_32(head: bytes) -> str | None:
    """The encoding of text in UTF-16 or UTF-32 without a byte-order mark, judged from where its
    NUL bytes sit: code points below U+0100 (all of ASCII) leave the high byte(s) of each unit
    NUL, so nearly every second (UTF-16) or three of every four (UTF-32) bytes are NUL, in a
    fixed position. None when the NULs fall elsewhere, as in binary data."""
    n = len(head) - len(head) % 4
    if n < 8:
        return None
    nul = [[head[i] == 0 for i in range(k, n, 4)] for k in range(4)]
    share = [sum(col) / len(col) for col in nul]
    if min(share[1:]) > 0.9 and share[0] < 0.1:
        return "utf-32-le"
    if min(share[:3]) > 0.9 and share[3] < 0.1:
        return "utf-32-be"
    odd, even = (share[1] + share[3]) / 2, (share[0] + share[2]) / 2
    if odd > 0.9 and even < 0.1:
        return "utf-16-le"
    if even > 0.9 and odd < 0.1:
        return "utf-16-be"
    return None


def decode_source(content: bytes) -> tuple[str | None, str | None]:
    """Decode a source file, or return ``(None, error)``.

    A byte-order mark decides the encoding (UTF-8, UTF-16 or UTF-32, either byte order; the mark
    is dropped). Without one, a file whose first 8 KiB hold NUL bytes is UTF-16/32 when they sit
    where those encodings put them (``_unmarked_utf16_32``) and binary otherwise; the rest must
    be strict UTF-8. Decoded text that still holds a NUL character is binary too.
    """
    head = content[:_BINARY_SNIFF_BYTES]
    encoding = next((enc for bom, enc in _BOMS if content.startswith(bom)), None)
    if encoding is not None:
        content = content[len(next(b for b, e in _BOMS if e == encoding)):]
    elif b"\x00" in head:
        encoding = _unmarked_utf16_32(head)
        if encoding is None:
            return None, "binary_file: NUL byte in the first 8 KiB"
    try:
        text = content.decode(encoding or "utf-8")
    except UnicodeDecodeError as exc:
        kind = "invalid_" + (encoding or "utf-8").replace("-", "")
        return None, f"{kind}: {exc.reason} at byte {exc.start}"
    if "\x00" in text:
        return None, "binary_file: NUL character in the text"
    return text, None


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


# Compressed text by extension. pyarrow's codecs (already a dependency) cover what dumps of code
# use besides xz, which Python's lzma reads; Spark's reader (Hadoop's codecs) would decompress
# some of them, but a truncated file fails the whole job there, and zstd needs a native library.
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4", ".br": "brotli",
               ".xz": "xz"}


def compression_of(path: str) -> str | None:
    """The codec a file's extension names, or None for plain text."""
    suffix = path[path.rfind("."):].lower() if "." in path else ""
    return COMPRESSION.get(suffix)


def decompressed(stream, codec: str):
    """A binary stream of what ``stream`` holds compressed with ``codec``."""
    if codec == "xz":
        import lzma

        return lzma.open(stream, "rb")
    import pyarrow as pa

    return pa.CompressedInputStream(stream, codec)


def lines_of(stream, read_bytes: int = 1 << 16):
    """The lines of a binary stream, without their ``\\n`` (or ``\\r\\n``), in bounded memory
    whatever its size; a line longer than one read comes whole."""
    pending: list[bytes] = []  # pieces of a line longer than one read
    while chunk := stream.read(read_bytes):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:end])
            yield b"".join(pending).removesuffix(b"\r")
            pending, start = [], end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending).removesuffix(b"\r")


def compressed_lines(path: str, read_bytes: int = 1 << 16):
    """The lines of a compressed text file (``lines_of``). A file that cannot be opened or
    breaks off raises ``OSError`` (``EOFError`` for xz) after the lines before the break."""
    with open(path, "rb") as raw, decompressed(raw, compression_of(path)) as stream:
        yield from lines_of(stream, read_bytes)

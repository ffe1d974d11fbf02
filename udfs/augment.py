"""Augmentations of one definition's code, done on its syntax tree, each checked by re-parsing.

* ``strip_comments`` — comment nodes removed (a comment alone on its lines takes the lines with it;
  Python docstrings are strings, not comments, and stay). → task ``add_comments``.
* ``rename_locals`` — parameters and local variables renamed ``var_0``, ``var_1``, … consistently:
  only ``identifier`` nodes whose name the definition itself declares (parameter or local
  declaration positions per language), never attribute/field/property names, keyword-argument
  names or anything inside strings (those are other node types); names that also appear in
  shorthand forms (``{ item }`` in JS, ``Point { x }`` in Rust) are left alone since renaming would
  change a key. → task ``refactor`` (the model restores the names).
* ``strip_type_hints`` — Python parameter and return annotations removed. → task ``type_hints``.
* ``inject_bug`` — one binary operator swapped for its near miss (``<``↔``<=``, ``==``↔``!=``,
  ``+``↔``-``, ``and``↔``or``, …), chosen by a seed. → task ``debug``.

Each returns the new code, or None when there is nothing to change; it raises ``Unparseable`` when
the definition does not parse on its own (``definition_unparseable``) or the result does not parse
(``augment_unparseable``) — the caller counts those, and emits nothing. JavaScript/TypeScript/Java methods only parse inside a class, so
they are wrapped in ``class _ { … }`` for parsing and unwrapped after.
"""

from __future__ import annotations

import hashlib
import textwrap
from functools import lru_cache

from udfs.syntax import SYNTAX, ParseRefused, parse, parse_snippet

_WRAP_METHODS = {"javascript", "typescript", "tsx", "java"}

# (parent type, field) positions where an identifier declares a parameter or local; field None
# means any unnamed child position.
_DECLARES: dict[str, set[tuple[str, str | None]]] = {
    "python": {("parameters", None), ("default_parameter", "name"), ("typed_parameter", None),
               ("typed_default_parameter", "name"), ("assignment", "left"),
               ("for_statement", "left"), ("lambda_parameters", None)},
    "javascript": {("formal_parameters", None), ("variable_declarator", "name"),
                   ("arrow_function", "parameter"), ("assignment_pattern", "left"),
                   ("for_in_statement", "left")},
    "go": {("parameter_declaration", "name"), ("var_spec", "name")},
    "rust": {("parameter", "pattern"), ("let_declaration", "pattern"),
             ("closure_parameters", None)},
    "java": {("formal_parameter", "name"), ("variable_declarator", "name"),
             ("enhanced_for_statement", "name"), ("catch_formal_parameter", "name")},
    "c": {("parameter_declaration", "declarator"), ("init_declarator", "declarator"),
          ("declaration", "declarator"), ("pointer_declarator", "declarator"),
          ("array_declarator", "declarator")},
}
_DECLARES["typescript"] = _DECLARES["tsx"] = _DECLARES["javascript"] | {
    ("required_parameter", "pattern"), ("optional_parameter", "pattern")}
_DECLARES["cpp"] = _DECLARES["c"] | {("reference_declarator", None)}
# identifier occurrences that are not the variable (the callee's keyword, an attribute name)
_NOT_A_USE = {("attribute", "attribute"), ("keyword_argument", "name")}
# node types whose text doubles as a key: names found there are never renamed
_SHORTHANDS = {"shorthand_property_identifier", "shorthand_property_identifier_pattern",
               "shorthand_field_initializer", "shorthand_field_identifier"}

_SWAPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "===": "!==",
          "!==": "===", "+": "-", "-": "+", "&&": "||", "||": "&&", "and": "or", "or": "and",
          "is": "is not", "in": "not in"}
_OPERATOR_PARENTS = {"binary_expression", "comparison_operator", "boolean_operator",
                     "binary_operator"}


def _nodes(root):
    """Every node below ``root``, iteratively (no recursion)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


class Unparseable(Exception):
    """The code before or after an augmentation does not parse; ``reason`` names which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Snippet:
    """A definition's code parsed on its own (wrapped in a class where the language needs it)."""

    def __init__(self, code: str, gid: str, kind: str):
        self.gid = gid
        wrap = gid in _WRAP_METHODS and kind == "method"
        self.head = b"class _ {\n" if wrap else b""
        self.tail = b"\n}\n" if wrap else b""
        self.b = self.head + code.encode() + self.tail
        self.tree = parse_snippet(self.b, gid)
        self._nodes: list | None = None

    @property
    def nodes(self) -> list:
        """Every node of the tree, walked once for all the augmentations of the definition."""
        if self._nodes is None:
            self._nodes = list(_nodes(self.tree.root_node))
        return self._nodes

    def ok(self) -> bool:
        return not self.tree.root_node.has_error

    def splice(self, edits: list[tuple[int, int, bytes]]) -> str | None:
        """Apply (start, end, replacement) edits; None unless the result parses cleanly."""
        if not edits:
            return None
        out = self.b
        for start, end, new in sorted(edits, reverse=True):
            out = out[:start] + new + out[end:]
        try:
            broken = parse(out, self.gid).root_node.has_error
        except ParseRefused:
            broken = True
        if broken:
            raise Unparseable("augment_unparseable")
        return out[len(self.head):len(out) - len(self.tail)].decode("utf-8")

    def text(self, node) -> bytes:
        return self.b[node.start_byte:node.end_byte]


@lru_cache(maxsize=8)  # the four augmentations of one definition share a single parse
def _snippet(code: str, gid: str, kind: str) -> _Snippet:
    try:
        snip = _Snippet(code, gid, kind)
    except ParseRefused:
        raise Unparseable("definition_unparseable") from None
    if not snip.ok():
        raise Unparseable("definition_unparseable")
    return snip


def dedent_definition(code: str, indent: str) -> str:
    """A definition cut from a file, as if it started at column 0 (``indent``: the whitespace
    before it on its first line)."""
    return textwrap.dedent(indent + code) if indent.strip() == "" else code


def strip_comments(code: str, gid: str, kind: str = "function") -> str | None:
    snip = _snippet(code, gid, kind)
    comment_types = set(SYNTAX[gid].comments)
    b, edits = snip.b, []
    for node in snip.nodes:
        if node.type not in comment_types:
            continue
        start, end = node.start_byte, node.end_byte
        line_start = b.rfind(b"\n", 0, start) + 1
        nl = b.find(b"\n", end)
        line_end = len(b) if nl == -1 else nl + 1
        if not b[line_start:start].strip() and not b[end:line_end].strip():
            edits.append((line_start, line_end, b""))  # the comment owns its lines
        else:
            while start > line_start and b[start - 1] in b" \t":
                start -= 1
            edits.append((start, end, b""))
    return snip.splice(edits)


def rename_locals(code: str, gid: str, kind: str = "function") -> tuple[str, dict[str, str]] | None:
    snip = _snippet(code, gid, kind)
    declares = _DECLARES[gid]
    declared: list[str] = []
    blocked: set[str] = set()
    names_in_code: set[str] = set()
    idents = []
    for node in snip.nodes:
        if node.type in _SHORTHANDS:
            blocked.add(snip.text(node).decode())
            continue
        if node.type != "identifier":
            continue
        name = snip.text(node).decode()
        names_in_code.add(name)
        parent = node.parent
        field = _field_of(node)
        idents.append((node, name, (parent.type, field) if parent is not None else None))
        go_short = (parent is not None and parent.type == "expression_list"
                    and parent.parent is not None
                    and parent.parent.type in ("short_var_declaration", "range_clause")
                    and _field_of(parent) == "left")  # Go: `v, err := …`
        if parent is not None and ((parent.type, field) in declares
                                   or (parent.type, None) in declares or go_short):
            if name not in declared:
                declared.append(name)
    fresh = (f"var_{i}" for i in range(10_000))
    mapping: dict[str, str] = {}
    for name in declared:
        if name in blocked or name in ("self", "this", "_"):
            continue
        new = next(fresh)
        while new in names_in_code:
            new = next(fresh)
        mapping[name] = new
    edits = [(n.start_byte, n.end_byte, mapping[name].encode()) for n, name, pos in idents
             if name in mapping and pos not in _NOT_A_USE]
    out = snip.splice(edits)
    return (out, mapping) if out is not None and mapping else None


def _field_of(node) -> str | None:
    parent = node.parent
    if parent is None:
        return None
    for i, child in enumerate(parent.children):
        if child.id == node.id:
            return parent.field_name_for_child(i)
    return None


def strip_type_hints(code: str, gid: str, kind: str = "function") -> str | None:
    if gid != "python":
        return None
    snip = _snippet(code, gid, kind)
    edits = []
    fn = next((n for n in snip.nodes if n.type == "function_definition"), None)
    if fn is None:
        return None
    params = fn.child_by_field_name("parameters")
    for p in (params.named_children if params is not None else []):
        if p.type == "typed_parameter":
            ident = p.named_children[0]
            edits.append((p.start_byte, p.end_byte, snip.text(ident)))
        elif p.type == "typed_default_parameter":
            name, value = p.child_by_field_name("name"), p.child_by_field_name("value")
            edits.append((p.start_byte, p.end_byte, snip.text(name) + b"=" + snip.text(value)))
    ret = fn.child_by_field_name("return_type")
    if ret is not None and params is not None:
        edits.append((params.end_byte, ret.end_byte, b""))
    return snip.splice(edits)


def inject_bug(code: str, gid: str, seed: str, kind: str = "function") -> tuple[str, str] | None:
    """(buggy code, "a → b" description) or None."""
    snip = _snippet(code, gid, kind)
    ops = [n for n in snip.nodes
           if not n.is_named and n.parent is not None and n.parent.type in _OPERATOR_PARENTS
           and snip.text(n).decode() in _SWAPS]
    if not ops:
        return None
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    op = ops[digest % len(ops)]
    old = snip.text(op).decode()
    out = snip.splice([(op.start_byte, op.end_byte, _SWAPS[old].encode())])
    return (out, f"{old} → {_SWAPS[old]}") if out is not None else None

"""Parsing source files with tree-sitter, bounded in time and depth, and finding their definitions.

Grammars come from the per-language wheels (``tree-sitter-python``, ``-javascript``, ``-typescript``
(TypeScript and TSX), ``-go``, ``-rust``, ``-java``, ``-c``, ``-cpp``), imported lazily so a worker
loads only the grammars its files need. All offsets are UTF-8 byte offsets into the source, as
tree-sitter reports them.

``SYNTAX`` is the one table of node types per language. Its definition queries follow each grammar's
own ``queries/tags.scm`` (``@definition.function`` / ``.method`` / ``.class``); the differences are
deliberate and listed per language in ``TAGS_DIFFERENCES`` (a test holds the two in step):
definitions without a body to complete (TypeScript signatures, C prototypes) are left out, and
constructors and impl blocks are added because they hold code.

Bounds (``parse``): files over ``max_bytes`` are not parsed; bracket nesting deeper than
``max_nesting`` (counted on the raw bytes, vectorized) is refused before parsing; the parse itself
is cancelled at ``timeout_s`` through tree-sitter's progress callback. Every walk here is a loop
over an explicit list or ``Node.parent`` links: no recursion, so a deep tree cannot overflow the
Python stack.
"""

from __future__ import annotations

import importlib
import re
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tree_sitter import Language, Node, Parser, Query, Tree

# grammar name → (module, function returning the language pointer)
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}


@dataclass(frozen=True)
class LanguageSyntax:
    """Node types of one language that the splitter cares about.

    functions: definitions whose ``body`` field is code to complete (functions, methods,
        constructors; JS/TS arrow functions and function expressions bound to a variable).
    classes: definitions whose ``body`` holds methods (classes, Rust impl and trait blocks).
    wrappers: parents that belong to the definition they wrap: Python decorators, JS/TS ``export``,
        C++ ``template<...>``. A definition's span and its doc comment start at the outermost one.
    comments: comment node types; doc_prefixes: a comment is a doc comment if it starts with one of
        these (Go: any ``//`` comment directly above a declaration, per Effective Go); Python uses
        docstrings instead (``docstrings``).
    """

    name: str
    functions: tuple[str, ...]
    classes: tuple[str, ...]
    wrappers: tuple[str, ...] = ()
    comments: tuple[str, ...] = ("comment",)
    doc_prefixes: tuple[str, ...] = ("/**", "///")
    docstrings: bool = False

    @property
    def query_source(self) -> str:
        """The definitions query: ``@function`` and ``@class`` captures."""
        parts = []
        for t in self.functions:
            if t in _BOUND_FUNCTIONS:  # only when bound to a name: `const f = () => {...}`
                parts.append(f"(variable_declarator value: ({t}) @function)")
            else:
                parts.append(f"({t}) @function")
        parts += [f"({t}) @class" for t in self.classes]
        return "\n".join(parts)


_BOUND_FUNCTIONS = ("arrow_function", "function_expression")
_JS_FUNCTIONS = ("function_declaration", "generator_function_declaration", "method_definition",
                 "arrow_function", "function_expression")

SYNTAX: dict[str, LanguageSyntax] = {
    "python": LanguageSyntax("python", ("function_definition",), ("class_definition",),
                             wrappers=("decorated_definition",), doc_prefixes=(), docstrings=True),
    "javascript": LanguageSyntax("javascript", _JS_FUNCTIONS, ("class_declaration",),
                                 wrappers=("export_statement",)),
    "typescript": LanguageSyntax("typescript", _JS_FUNCTIONS,
                                 ("class_declaration", "abstract_class_declaration"),
                                 wrappers=("export_statement",)),
    "go": LanguageSyntax("go", ("function_declaration", "method_declaration"), (),
                         doc_prefixes=("//",)),
    "rust": LanguageSyntax("rust", ("function_item",), ("impl_item", "trait_item"),
                           comments=("line_comment", "block_comment"),
                           doc_prefixes=("///", "/**")),
    "java": LanguageSyntax("java", ("method_declaration", "constructor_declaration"),
                           ("class_declaration", "interface_declaration", "enum_declaration",
                            "record_declaration"),
                           comments=("line_comment", "block_comment")),
    "c": LanguageSyntax("c", ("function_definition",), ()),
    "cpp": LanguageSyntax("cpp", ("function_definition",), ("class_specifier", "struct_specifier"),
                          wrappers=("template_declaration",)),
}
SYNTAX["tsx"] = LanguageSyntax("tsx", *[getattr(SYNTAX["typescript"], f) for f in (
    "functions", "classes", "wrappers", "comments", "doc_prefixes", "docstrings")])

# Where SYNTAX departs from each grammar's tags.scm, and why (checked by tests/udfs/test_syntax.py).
TAGS_DIFFERENCES: dict[str, dict[str, str]] = {
    "javascript": {"class": "class expressions have no name of their own",
                   "generator_function": "anonymous generator expressions: no name to complete"},
    "typescript": {"function_signature": "no body", "method_signature": "no body",
                   "abstract_method_signature": "no body", "module": "holds declarations, no body",
                   "interface_declaration": "no method bodies"},
    "go": {"type_spec": "types hold no methods in Go; methods are top-level declarations"},
    "rust": {"struct_item": "no methods inside", "enum_item": "no methods inside",
             "union_item": "no methods inside", "type_item": "an alias",
             "mod_item": "holds items, each found on its own",
             "macro_definition": "macro rules, not code to complete"},
    "java": {},
    "c": {"struct_specifier": "no methods inside", "union_specifier": "no methods inside",
          "function_declarator": "the tags query marks the declarator; the definition with its "
                                 "body is function_definition (prototypes have none)",
          "type_definition": "an alias", "enum_specifier": "no code"},
    "cpp": {"union_specifier": "no methods inside", "type_definition": "an alias",
            "enum_specifier": "no code",
            "function_declarator": "as in C: the definition with its body is function_definition"},
    "python": {},
}


class ParseRefused(Exception):
    """A file the splitter will not parse (too large, too deep, too slow); ``reason`` is its name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def grammar_name(language: str | None, path: str = "") -> str | None:
    """The grammar for a file: ``tsx`` for ``.tsx`` files, else the language if it has one."""
    if language == "typescript" and path.lower().endswith(".tsx"):
        return "tsx"
    return language if language in GRAMMARS else None


@cache
def grammar(name: str) -> Language:
    from tree_sitter import Language

    module, attr = GRAMMARS[name]
    return Language(getattr(importlib.import_module(module), attr)())


@cache
def _parser(name: str) -> Parser:
    from tree_sitter import Parser

    return Parser(grammar(name))


@cache
def definitions_query(name: str) -> Query:
    from tree_sitter import Query

    return Query(grammar(name), SYNTAX[name].query_source)


_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[list(b"([{")] = 1
_OPEN[list(b")]}")] = -1


def bracket_depth(source: bytes) -> int:
    """Deepest nesting of ``([{`` on the raw bytes (brackets in strings count too: a bound, not a
    measure of the syntax tree)."""
    if not source:
        return 0
    steps = _OPEN[np.frombuffer(source, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


@lru_cache(maxsize=8)
def parse_snippet(source: bytes, grammar_id: str) -> Tree:
    """``parse`` with the default bounds, remembered for the last few sources: build_sft reads one
    definition's tree several times (its docstring, then each augmentation), and parsing is most
    of its work. Trees are not edited in place anywhere, so sharing one is safe."""
    return parse(source, grammar_id)


def parse(source: bytes, grammar_id: str, *, timeout_s: float = 2.0, max_bytes: int = 1 << 20,
          max_nesting: int = 256) -> Tree:
    """Parse ``source`` with the named grammar within the bounds in the module docstring.

    Raises ``ParseRefused`` with reason ``too_large``, ``too_deep`` or ``parse_timeout``. The tree
    keeps no copy of the source (it was read through a callback): slice ``source`` by byte offsets
    instead of ``Node.text``, and run no query with text predicates (``#eq?``, ``#match?``) on it —
    py-tree-sitter 0.26 crashes the process on either.
    """
    if len(source) > max_bytes:
        raise ParseRefused("too_large", f"{len(source)} bytes > max_parse_bytes={max_bytes}")
    # with no more opening brackets than the bound, the depth cannot exceed it: skip the scan
    opens = source.count(b"(") + source.count(b"[") + source.count(b"{")
    depth = bracket_depth(source) if opens > max_nesting else 0
    if depth > max_nesting:
        raise ParseRefused("too_deep", f"bracket nesting {depth} > max_nesting={max_nesting}")
    parser = _parser(grammar_id)
    view = memoryview(source)
    deadline = time.monotonic() + timeout_s
    try:
        # the callback form is the one that takes a progress callback (to cancel at the deadline);
        # tree-sitter asks for text from an offset and we hand it a zero-copy view
        return parser.parse(lambda offset, _point: view[offset:],
                            progress_callback=lambda _offset, _err: time.monotonic() > deadline)
    except ValueError:
        parser.reset()  # a cancelled parse would otherwise resume on the next call
        if time.monotonic() > deadline:
            raise ParseRefused("parse_timeout",
                               f"not parsed within parse_timeout_s={timeout_s}") from None
        raise


# ---------------------------------------------------------------------------------------------
# Definitions


@dataclass(frozen=True)
class Definition:
    """A function or class found in a file. Spans are byte offsets ``[start, end)``."""

    kind: str  # function | method | class
    name: str
    qualname: str  # enclosing definitions' names joined with "." (Inventory.add)
    node: Node
    outer: Node  # the node with its wrappers (decorators, export, template)
    body: Node | None
    docstring: Node | None  # Python: the string node of the docstring
    doc_comments: tuple[Node, ...]  # the doc comment nodes directly above, in order
    parent: Definition | None = None  # the nearest enclosing named definition

    @property
    def start(self) -> int:
        return self.outer.start_byte

    @property
    def end(self) -> int:
        return self.outer.end_byte


def _text(node: Node | None, source: bytes) -> str:
    # Node.text is not used: a tree parsed through a read callback keeps no copy of the source
    if node is None:
        return ""
    return source[node.start_byte:node.end_byte].decode("utf-8", "replace")


def _declarator_name(node: Node) -> Node | None:
    """C/C++: the name inside ``declarator`` chains (pointer, reference, function declarators)."""
    d = node.child_by_field_name("declarator")
    while d is not None and d.type not in ("identifier", "field_identifier", "qualified_identifier",
                                           "destructor_name", "operator_name", "type_identifier"):
        nxt = d.child_by_field_name("declarator")
        if nxt is None:
            # reference_declarator has no field: its declarator is the last named child
            nxt = d.named_children[-1] if d.named_child_count else None
        d = nxt
    return d


def definition_name(node: Node, source: bytes) -> str:
    """The name a definition node declares, or "" if it has none."""
    if node.type in _BOUND_FUNCTIONS:
        parent = node.parent
        return _text(parent.child_by_field_name("name"), source) if parent is not None else ""
    if node.type == "function_definition" and node.child_by_field_name("name") is None:
        return _text(_declarator_name(node), source)  # C / C++
    if node.type == "impl_item":
        return _text(node.child_by_field_name("type"), source)
    return _text(node.child_by_field_name("name"), source)


def _outer(node: Node, syntax: LanguageSyntax) -> Node:
    outer = node
    if node.type in _BOUND_FUNCTIONS and node.parent is not None:
        # `const f = () => {}`: variable_declarator inside lexical/variable declaration
        decl = node.parent.parent
        if decl is not None and decl.type in ("lexical_declaration", "variable_declaration"):
            outer = decl
    while outer.parent is not None and outer.parent.type in syntax.wrappers:
        outer = outer.parent
    return outer


_GO_RECEIVER = re.compile(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\])?\s*\)$")


def python_docstring(body: Node | None) -> Node | None:
    """The docstring of a Python function or class body: a first statement that is only a string."""
    if body is None or body.named_child_count == 0:
        return None
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_child_count == 1:
        expr = first.named_children[0]
        if expr.type in ("string", "concatenated_string"):
            return expr
    return None


def doc_comments(outer: Node, syntax: LanguageSyntax, source: bytes) -> tuple[Node, ...]:
    """Comment nodes directly above ``outer`` (no blank line between), if they are doc comments."""
    found: list[Node] = []
    below = outer
    prev = outer.prev_sibling
    while prev is not None and prev.type in syntax.comments:
        if prev.end_point.row < below.start_point.row - 1:
            break  # a blank line separates it
        found.append(prev)
        below, prev = prev, prev.prev_sibling
    found.reverse()
    if not found or not _text(found[0], source).startswith(syntax.doc_prefixes):
        return ()
    return tuple(found)


def definitions(tree: Tree, source: bytes, grammar_id: str, deadline: float | None = None) -> list[Definition]:
    """Functions, methods and classes of a parsed file in source order (outer before inner).

    Nameless matches (anonymous functions) are left out. ``deadline`` (``time.monotonic()``) raises
    ``ParseRefused("split_timeout")`` when passed; the query itself runs in C in linear time.
    """
    from tree_sitter import QueryCursor

    syntax = SYNTAX[grammar_id]
    captures = QueryCursor(definitions_query(grammar_id)).captures(tree.root_node)
    kinds = {}
    for capture, nodes in captures.items():
        for node in nodes:
            kinds[node.id] = (capture, node)
    ordered = sorted(kinds.values(), key=lambda cn: (cn[1].start_byte, -cn[1].end_byte))
    out: list[Definition] = []
    # enclosing named definitions, innermost last: nodes come sorted by (start, -end), so a node's
    # enclosing definitions are exactly those on the stack that end at or after it ends
    stack: list[Definition] = []
    for i, (capture, node) in enumerate(ordered):
        if deadline is not None and i % 64 == 0 and time.monotonic() > deadline:
            raise ParseRefused("split_timeout", f"definitions of file not found within deadline "
                                                f"after {i} of {len(ordered)}")
        name = definition_name(node, source)
        if not name:
            continue
        end = node.end_byte
        while stack and stack[-1].node.end_byte < end:
            stack.pop()
        parent = stack[-1] if stack else None
        if node.type == "method_declaration" and grammar_id == "go":  # Go: the receiver type
            receiver = _GO_RECEIVER.search(_text(node.child_by_field_name("receiver"), source))
            prefix = receiver.group(1) + "." if receiver else ""
        else:
            prefix = parent.qualname + "." if parent is not None else ""
        kind = "class" if capture == "class" else (
            "method" if (parent is not None and parent.kind == "class")
            or node.type == "method_declaration" else "function")
        body = node.child_by_field_name("body")
        outer = _outer(node, syntax)
        d = Definition(
            kind=kind, name=name, qualname=prefix + name, node=node, outer=outer, body=body,
            docstring=python_docstring(body) if syntax.docstrings else None,
            doc_comments=() if syntax.docstrings else doc_comments(outer, syntax, source),
            parent=parent)
        out.append(d)
        stack.append(d)
    return out

"""udfs.split and udfs.syntax: exact samples per language, FIM, fallback, bounds, byte offsets."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from udfs.fim import render_fim, render_repo, render_repo_fim
from udfs.languages import language_for_path
from udfs.split import SplitParams, split_file
from udfs.syntax import GRAMMARS, SYNTAX, TAGS_DIFFERENCES, bracket_depth, grammar, grammar_name

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "split"
NO_FIM = SplitParams(max_samples_per_file=100,
                     tasks=("function_completion", "class_completion", "docstring"))

# (task type, symbol, kind, first line of the target — the whole target for docstrings)
EXPECTED = {
    "Account.java": [
        ("function_completion", "Account.Account", "method", "{"),
        ("function_completion", "Account.deposit", "method", "{"),
        ("function_completion", "Account.getBalance", "method", "{"),
        ("class_completion", "Account", "class", ""),
        ("docstring", "Account", "class", "/** A bank account with a transaction log. */"),
        ("docstring", "Account.deposit", "method",
         "/**\n     * Deposit a positive amount.\n     */"),
    ],
    "badge.tsx": [("function_completion", "Badge", "function", "{")],
    "cart.js": [
        ("function_completion", "cartTotal", "function", "{"),
        ("function_completion", "isEmpty", "function", "{"),
        ("function_completion", "Cart.constructor", "method", "{"),
        ("function_completion", "Cart.add", "method", "{"),
        ("function_completion", "Cart.clear", "method", "{"),
        ("class_completion", "Cart", "class", ""),
        ("docstring", "cartTotal", "function", "/**\n * Sum of line totals, rounded to cents.\n */"),
        ("docstring", "Cart.add", "method", "/** Add a line to the cart. */"),
    ],
    "inventory.py": [
        ("function_completion", "retry", "function", "def wrap(fn):"),
        ("function_completion", "retry.wrap", "function", "@functools.wraps(fn)"),
        ("function_completion", "retry.wrap.inner", "function", "for _ in range(times - 1):"),
        ("function_completion", "Inventory.__init__", "method", "self.counts = {}"),
        ("function_completion", "Inventory.add", "method",
         "self.counts[name] = self.counts.get(name, 0) + qty"),
        ("function_completion", "Inventory.total", "method", "return sum(self.counts.values())"),
        ("class_completion", "Inventory", "class", ""),
        ("docstring", "retry", "function", '"""Retry a call up to ``times`` times."""'),
        ("docstring", "Inventory", "class", '"""Counts of items by name — café edition."""'),
        ("docstring", "Inventory.add", "method", '"""Add ``qty`` of ``name``."""'),
    ],
    "matrix.rs": [
        ("function_completion", "Matrix.zeros", "method", "{"),
        ("function_completion", "Matrix.get", "method", "{"),
        ("function_completion", "Matrix.set", "method", "{"),
        ("function_completion", "Matrix.fmt", "method", "{"),
        ("function_completion", "trace", "function", "{"),
        ("class_completion", "Matrix", "class", ""),  # the impl block with three methods
        ("docstring", "Matrix.zeros", "method", "/// A matrix of zeros."),
    ],
    "queue.ts": [
        ("function_completion", "JobQueue.push", "method", "{"),
        ("function_completion", "JobQueue.next", "method", "{"),
        ("function_completion", "drain", "function", "{"),
        ("class_completion", "JobQueue", "class", ""),
        ("docstring", "JobQueue", "class", "/** A FIFO of jobs with a retry limit. */"),
    ],
    "ring.c": [
        ("function_completion", "ring_new", "function", "{"),
        ("function_completion", "ring_put", "function", "{"),
        ("docstring", "ring_new", "function", "/** Allocate a ring of cap bytes. */"),
    ],
    "shapes.cpp": [
        ("function_completion", "Circle.area", "method", "{"),
        ("function_completion", "Circle.perimeter", "method", "{ return 2 * M_PI * r_; }"),
        ("function_completion", "Circle_scale", "function", "{"),
        ("class_completion", "Circle", "class", ""),
        ("docstring", "Circle", "class", "/// A circle in the plane."),
    ],
    "stack.go": [
        ("function_completion", "Stack.Push", "method", "{"),
        ("function_completion", "Stack.Pop", "method", "{"),
        ("function_completion", "New", "function", "{"),
        ("docstring", "Stack.Push", "method", "// Push adds v on top."),
        ("docstring", "Stack.Pop", "method", "// Pop removes and returns the top value."),
    ],
}


def split_fixture(name: str, params: SplitParams = NO_FIM):
    text = (FIXTURES / name).read_text()
    return text, split_file(text, language_for_path(name), name, f"id-{name}", params)


def check_spans(text: str, sample: dict) -> None:
    """Every string of a sample is the bytes its spans name."""
    b = text.encode()
    spans = sample["spans"]

    def cut(name):
        s, e = spans[name]
        return b[s:e].decode()

    if sample["task_type"] in ("fim", "fim_repo"):
        assert (sample["prefix"], sample["middle"], sample["suffix"]) == (
            cut("prefix"), cut("middle"), cut("suffix"))
    else:
        rest = cut("context_rest") if "context_rest" in spans else ""
        assert sample["context"] == cut("context") + rest
        assert sample["target"] == cut("target")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_samples_per_language(name):
    text, res = split_fixture(name)
    assert (res.parse_status, res.split_method) == ("ok", "ast")
    got = [(s["task_type"], s["symbol"], s["symbol_kind"],
            s["target"] if s["task_type"] == "docstring" else s["target"].split("\n")[0])
           for s in res.samples]
    assert got == EXPECTED[name]
    for s in res.samples:
        check_spans(text, s)
    assert len({s["sample_id"] for s in res.samples}) == len(res.samples)


def test_function_completion_spans_by_hand():
    text, res = split_fixture("stack.go")
    b = text.encode()
    pop = next(s for s in res.samples if s["symbol"] == "Stack.Pop"
               and s["task_type"] == "function_completion")
    start = b.index(b"{\n\tif len(s.items) == 0")
    end = b.index(b"return v, nil\n}") + len(b"return v, nil\n}")
    definition = b.index(b"func (s *Stack) Pop()")
    assert pop["spans"] == {"context": [0, start], "target": [start, end],
                            "definition": [definition, end]}
    assert pop["context"].endswith("func (s *Stack) Pop() (int, error) ")
    assert pop["target"].endswith("return v, nil\n}")


def test_python_decorators_docstrings_and_nesting():
    text, res = split_fixture("inventory.py")
    by = {(s["task_type"], s["symbol"]): s for s in res.samples}
    # the decorator and the docstring are context; the body after the docstring is the target
    add = by["function_completion", "Inventory.add"]
    assert add["context"].endswith(
        '    @retry(3)\n    def add(self, name, qty=1):\n        """Add ``qty`` of ``name``."""\n'
        "        ")
    assert add["target"] == "self.counts[name] = self.counts.get(name, 0) + qty"
    # nested functions are found with their qualified names; the inner decorator is context
    inner = by["function_completion", "retry.wrap.inner"]
    assert inner["context"].endswith(
        "        @functools.wraps(fn)\n        def inner(*args, **kwargs):\n            ")
    assert inner["target"].endswith("return fn(*args, **kwargs)")
    # docstring task: the definition with the docstring's line removed → the docstring
    doc = by["docstring", "Inventory.add"]
    assert doc["context"] == ("@retry(3)\n    def add(self, name, qty=1):\n"
                              "        self.counts[name] = self.counts.get(name, 0) + qty")
    # class completion: header, docstring and first method → the remaining methods
    cls = by["class_completion", "Inventory"]
    assert cls["context"].endswith("def __init__(self):\n        self.counts = {}")
    assert cls["target"].lstrip().startswith("@retry(3)\n    def add(")
    assert cls["target"].endswith("return sum(self.counts.values())")


def test_byte_offsets_with_non_ascii_source():
    text, res = split_fixture("inventory.py")
    b = text.encode()
    assert len(b) > len(text)  # "café" and "—" take more bytes than characters
    doc = next(s for s in res.samples if s["task_type"] == "docstring"
               and s["symbol"] == "Inventory")
    s, e = doc["spans"]["target"]
    assert (s, e) == (b.index(b'"""Counts'), b.index(b"edition.\"\"\"") + 11)
    assert text[s:e] != doc["target"]  # character offsets would be wrong
    total = next(s for s in res.samples if s["symbol"] == "Inventory.total")
    assert b[total["spans"]["target"][0]:].decode().startswith("return sum(")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fim_reassembles_the_file(name):
    params = SplitParams(max_samples_per_file=100, fim_rate=1.0, fim_per_file=3)
    text, res = split_fixture(name, params)
    fims = [s for s in res.samples if s["task_type"] == "fim"]
    assert fims
    for s in fims:
        assert s["prefix"] + s["middle"] + s["suffix"] == text
        assert s["cut"] is None
        check_spans(text, s)
        assert s["rendered"] == render_fim(s["prefix"], s["middle"], s["suffix"], s["fim_mode"])
        assert len(s["middle"].encode()) >= params.fim_min_middle_bytes


def test_fim_middle_is_a_syntax_node():
    text, res = split_fixture("Account.java", SplitParams(fim_rate=1.0, fim_per_file=4))
    from udfs.syntax import parse

    tree = parse(text.encode(), "java")
    for s in (s for s in res.samples if s["task_type"] == "fim"):
        ms, me = s["spans"]["middle"]
        node = tree.root_node.named_descendant_for_byte_range(ms, me)
        assert (node.start_byte, node.end_byte) == (ms, me)


def test_psm_and_spm_render_exactly():
    assert render_fim("def f(x):\n    ", "return x", "\n", "psm") == (
        "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n<|fim_middle|>return x")
    assert render_fim("def f(x):\n    ", "return x", "\n", "spm") == (
        "<|fim_prefix|><|fim_suffix|>\n<|fim_middle|>def f(x):\n    return x")
    with pytest.raises(ValueError, match="psm or spm"):
        render_fim("a", "b", "c", "pms")
    assert render_repo("acme/tools", [("a.py", "x = 1\n"), ("b.py", "y = 2")]) == (
        "<|repo_name|>acme/tools\n<|file_sep|>a.py\nx = 1\n<|file_sep|>b.py\ny = 2\n")
    assert render_repo_fim("acme/tools", [("a.py", "x = 1\n")], "b.py", "y = ", "2", "\n") == (
        "<|repo_name|>acme/tools\n<|file_sep|>a.py\nx = 1\n<|file_sep|>b.py\n"
        "<|fim_prefix|>y = <|fim_suffix|>\n<|fim_middle|>2")


def test_fim_rate_and_spm_share_follow_the_config():
    text = (FIXTURES / "cart.js").read_text()
    modes, fim_files = [], 0
    for i in range(400):
        res = split_file(text, "javascript", "cart.js", f"file-{i}",
                         SplitParams(tasks=("fim",), fim_per_file=1))
        fims = [s for s in res.samples if s["task_type"] == "fim"]
        fim_files += bool(fims)
        modes += [s["fim_mode"] for s in fims]
    assert 160 <= fim_files <= 240  # fim_rate 0.5 of 400 files, ± 4 sigma
    assert 0.35 <= modes.count("spm") / len(modes) <= 0.65
    never = split_file(text, "javascript", "cart.js", "x", SplitParams(fim_rate=0.0))
    assert "fim" not in {s["task_type"] for s in never.samples}
    spm = split_file(text, "javascript", "cart.js", "x", SplitParams(fim_rate=1, fim_spm_rate=1))
    assert {s["fim_mode"] for s in spm.samples if s["task_type"] == "fim"} == {"spm"}


def test_unparseable_input_falls_back_to_blank_line_split():
    text = "def broken(:\n    ))) class\n\nfirst paragraph here\nmore\n\nsecond one\nend\n"
    res = split_file(text, "python", "broken.py", "id")
    assert (res.parse_status, res.split_method) == ("error", "fallback")
    assert [(s["task_type"], s["target"]) for s in res.samples] == [
        ("line_completion", "first paragraph here\nmore\n\n"),
        ("line_completion", "second one\nend\n")]
    for s in res.samples:
        check_spans(text, s)
        assert s["context"] + s["target"] == text[:len(s["context"]) + len(s["target"])]
    # no grammar: fallback too, marked as such
    ruby = split_file("def a\n  1\nend\n\ndef b\n  2\nend\n", "ruby", "x.rb", "id")
    assert (ruby.parse_status, ruby.split_method, len(ruby.samples)) == (
        "no_grammar", "fallback", 1)
    # nothing to split: dropped with a reason, not silently empty
    one = split_file("x = (\n", "python", "one.py", "id")
    assert (one.samples, one.drop_reason) == ([], "unsplittable")


def test_valid_definitions_survive_errors_elsewhere():
    text = "def good(a, b):\n    return a + b\n\n\nx = = 1\n"
    res = split_file(text, "python", "m.py", "id", NO_FIM)
    assert (res.parse_status, res.split_method) == ("error", "ast")
    assert [(s["symbol"], s["target"]) for s in res.samples] == [("good", "return a + b")]


@pytest.mark.parametrize("language,text,reason", [
    ("python", "x = " + "[" * 10_000 + "]" * 10_000 + "\n", "too_deep"),
    ("javascript", "var s = '" + "a" * 5_000_000 + "';\n", "too_large"),
    ("c", "int t[] = {" + ",\n".join(str(i) for i in range(100_000)) + "};\n", "parse_timeout"),
])
def test_pathological_input_is_refused_in_bounded_time(language, text, reason):
    params = SplitParams(parse_timeout_s=0.02)
    started = time.perf_counter()
    res = split_file(text, language, "x", "id", params)
    assert time.perf_counter() - started < 1.0
    assert res.parse_status == reason
    assert res.refused.startswith(reason) and not res.samples
    # after a cancelled parse the parser is usable again
    again = split_file("int f(void) { return 42; }\n", "c", "f.c", "id", NO_FIM)
    assert [s["target"] for s in again.samples] == ["{ return 42; }"]


def test_limits_cut_and_skip_with_reasons():
    body = "".join(f"    v{i} = {i}\n" for i in range(50))
    text = "import os\n" * 40 + "def big():\n" + body + "\ndef tiny():\n    pass\n"
    res = split_file(text, "python", "m.py", "id", SplitParams(
        tasks=("function_completion",), max_context_bytes=100, max_target_bytes=200))
    # big's body is too long, tiny's too short: no AST sample, so the file falls back to lines
    assert res.split_method == "fallback"
    assert {s["task_type"] for s in res.samples} == {"line_completion"}
    reasons = {(k["symbol"], k["reason"]) for k in res.skipped}
    assert reasons == {("big", "target_too_long"), ("tiny", "target_too_short")}
    res = split_file(text, "python", "m.py", "id", SplitParams(
        tasks=("function_completion",), max_context_bytes=100))
    [big] = [s for s in res.samples if s["symbol"] == "big"]
    assert big["cut"] == "context_cut" and big["context"] == "import os\n" * 8 + "def big():\n    "
    many = "".join(f"def f{i}(x):\n    return x * {i} + 1\n\n" for i in range(30))
    capped = split_file(many, "python", "m.py", "id", SplitParams(
        tasks=("function_completion",), max_samples_per_file=5))
    assert len(capped.samples) == 5
    assert sum(k["reason"] == "over_file_cap" for k in capped.skipped) == 25


def test_reruns_are_identical():
    text = (FIXTURES / "matrix.rs").read_text()
    a = split_file(text, "rust", "matrix.rs", "same", SplitParams(fim_rate=1.0))
    b = split_file(text, "rust", "matrix.rs", "same", SplitParams(fim_rate=1.0))
    assert a.samples == b.samples


def test_grammars_load_and_tsx_is_chosen_by_extension():
    assert grammar_name("typescript", "a/b.tsx") == "tsx"
    assert grammar_name("typescript", "a/b.ts") == "typescript"
    assert grammar_name("ruby", "x.rb") is None
    for name in GRAMMARS:
        lang = grammar(name)
        syntax = SYNTAX[name]
        for node_type in (*syntax.functions, *syntax.classes, *syntax.wrappers, *syntax.comments):
            assert lang.id_for_node_kind(node_type, True) is not None, (name, node_type)


TAG_FIXTURES = {"python": "inventory.py", "javascript": "cart.js", "typescript": "queue.ts",
                "go": "stack.go", "rust": "matrix.rs", "java": "Account.java", "c": "ring.c",
                "cpp": "shapes.cpp"}


@pytest.mark.parametrize("name", sorted(TAG_FIXTURES))
def test_node_table_follows_the_grammars_tags_query(name):
    """Every function/method/class the grammar's own tags.scm finds in the fixture is one of our
    definitions (or the declarator holding it), or its node type is explained in
    TAGS_DIFFERENCES."""
    import importlib

    from tree_sitter import Parser, Query, QueryCursor

    from udfs.syntax import definitions, parse

    module = importlib.import_module(GRAMMARS[name][0])
    source = getattr(module, "TAGS_QUERY", None) or (
        Path(module.__file__).parent / "queries" / "tags.scm").read_text()
    if name == "typescript":  # its tags.scm extends JavaScript's (as tree-sitter.json lists them)
        source = importlib.import_module("tree_sitter_javascript").TAGS_QUERY + source
    b = (FIXTURES / TAG_FIXTURES[name]).read_bytes()
    # the tags query has text predicates: parse from bytes so nodes can read their text
    tree = Parser(grammar(name)).parse(b)
    tagged = [n for kind, nodes in QueryCursor(Query(grammar(name), source)).captures(
        tree.root_node).items() if kind in ("definition.function", "definition.method",
                                            "definition.class") for n in nodes]
    assert tagged
    ours = definitions(parse(b, name), b, name)
    spans = {(d.node.start_byte, d.node.end_byte) for d in ours}
    parents = {(d.node.parent.start_byte, d.node.parent.end_byte) for d in ours}
    for n in tagged:
        span = (n.start_byte, n.end_byte)
        assert span in spans or span in parents or n.type in TAGS_DIFFERENCES[name], (
            f"{name}: tags.scm defines a {n.type} at {span}, neither found nor explained")


def test_bracket_depth():
    assert bracket_depth(b"") == 0
    assert bracket_depth(b"f(a[1], {b: (2)})") == 3
    assert bracket_depth(b")))((") == 0  # depth counts from the file start, never below 0
    rng = random.Random(0)
    s = "".join(rng.choice("([{}])ab") for _ in range(2000)).encode()
    depth = best = 0
    for ch in s:
        depth += (ch in b"([{") - (ch in b")]}")
        best = max(best, depth)
    assert bracket_depth(s) == best

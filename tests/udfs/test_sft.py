"""udfs.instructions, udfs.augment, udfs.sft, udfs.chatml: templates, augmentations, weights, ChatML."""

from __future__ import annotations

import json
import math
import re
import string
from pathlib import Path

import pytest

from udfs.augment import inject_bug, rename_locals, strip_comments, strip_type_hints
from udfs.chatml import count_tokens, load_tokenizer, render, train_tokenizer
from udfs.instructions import (
    MIN_TEMPLATES,
    PLACEHOLDERS,
    TASK_TYPES,
    TemplateError,
    Templates,
    _Filled,
    purpose,
)
from udfs.languages import language_for_path
from udfs.sft import build_records, quality_score, raw_weight, validate_tool_calls
from udfs.split import SplitParams, split_file
from udfs.syntax import definitions, grammar_name, parse

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "split"
TEMPLATES = Templates.load(REPO / "conf" / "sft_templates.yaml")


def test_every_task_type_has_enough_templates_and_all_fill():
    assert sum(len(v) for v in TEMPLATES.by_task.values()) >= 50
    full = {"language": "Python", "name": "add", "qualname": "Inventory.add", "kind": "method",
            "purpose": "add an item", "params": "(self, name)", "path": "inv.py"}
    for task in TASK_TYPES:
        assert len(TEMPLATES.by_task[task]) >= MIN_TEMPLATES, task
        for text in TEMPLATES.by_task[task]:
            for meta in (full, {}):  # with nothing known, the stated defaults fill every slot
                filled = text.format_map(_Filled(meta))
                assert not re.search(r"\{[a-z_]*\}", filled), (task, text)
            names = {f for _, f, _, _ in string.Formatter().parse(text) if f}
            assert names <= PLACEHOLDERS


def test_template_choice_is_stable_and_spread():
    picks = [TEMPLATES.pick("debug", f"s{i}") for i in range(300)]
    assert picks == [TEMPLATES.pick("debug", f"s{i}") for i in range(300)]
    assert set(picks) == set(TEMPLATES.by_task["debug"])


def test_bad_templates_fail_naming_the_place():
    good = {"templates": {t: list(TEMPLATES.by_task[t]) for t in TASK_TYPES}}
    bad = json.loads(json.dumps(good))
    bad["templates"]["debug"][2] = "Fix {nmae} please"
    with pytest.raises(TemplateError, match=r"templates.debug\[2\] uses unknown placeholder"):
        Templates.from_dict(bad)
    few = json.loads(json.dumps(good))
    few["templates"]["explain"] = few["templates"]["explain"][:2]
    with pytest.raises(TemplateError, match="templates.explain has 2 templates"):
        Templates.from_dict(few)


def test_purpose_is_the_first_sentence():
    assert purpose('"""Retry a call up to ``times`` times.\n\n    More."""') == (
        "retry a call up to ``times`` times")
    assert purpose("/**\n * Sum of line totals, rounded to cents.\n */") == (
        "sum of line totals, rounded to cents")
    assert purpose("// Push adds v on top.") == "push adds v on top"
    assert purpose("/// HTTP client") == "HTTP client"  # acronyms keep their case
    assert purpose(None) is None


def _definition_code(name: str, symbol: str) -> tuple[str, str]:
    text = (FIXTURES / name).read_text()
    gid = grammar_name(language_for_path(name), name)
    b = text.encode()
    d = next(d for d in definitions(parse(b, gid), b, gid) if d.qualname == symbol)
    return b[d.start:d.end].decode(), gid


@pytest.mark.parametrize("name,symbol,kind", [
    ("inventory.py", "Inventory.add", "method"), ("cart.js", "cartTotal", "function"),
    ("queue.ts", "JobQueue.next", "method"), ("stack.go", "Stack.Pop", "method"),
    ("matrix.rs", "trace", "function"), ("Account.java", "Account.deposit", "method"),
    ("ring.c", "ring_put", "function"), ("shapes.cpp", "Circle_scale", "function"),
])
def test_renaming_is_consistent_and_parses(name, symbol, kind):
    code, gid = _definition_code(name, symbol)
    renamed, mapping = rename_locals(code, gid, kind)
    assert mapping and renamed != code
    assert all(re.fullmatch(r"var_\d+", v) for v in mapping.values())
    wrapped = renamed if not (gid in ("javascript", "typescript", "java") and kind == "method") \
        else "class _ {\n" + renamed + "\n}\n"
    assert not parse(wrapped.encode(), gid).root_node.has_error
    # consistent: mapping every new name back restores the code exactly
    back = re.sub(r"\bvar_\d+\b", lambda m: {v: k for k, v in mapping.items()}[m.group()],
                  renamed)
    assert back == code


def test_renaming_leaves_attributes_keywords_strings_and_shorthands():
    code = ('def f(name, qty):\n    """name here"""\n    obj.name = name\n'
            '    g(name=name, s="qty")\n    return qty\n')
    renamed, mapping = rename_locals(code, "python")
    assert mapping == {"name": "var_0", "qty": "var_1"}
    assert renamed == ('def f(var_0, var_1):\n    """name here"""\n    obj.name = var_0\n'
                       '    g(name=var_0, s="qty")\n    return var_1\n')
    js = "function f(item, qty) {\n  return { item, qty: qty };\n}"
    out, mapping = rename_locals(js, "javascript")
    assert mapping == {"qty": "var_0"}  # `item` is a shorthand key: renaming would change it
    assert out == "function f(item, var_0) {\n  return { item, qty: var_0 };\n}"


def test_strip_comments_type_hints_and_bugs():
    code = ("def add(self, name: str, qty: int = 1) -> None:\n"
            '    """Add qty."""\n    # count it\n    total = qty + 1  # running\n    return total\n')
    assert strip_comments(code, "python") == (
        'def add(self, name: str, qty: int = 1) -> None:\n    """Add qty."""\n'
        "    total = qty + 1\n    return total\n")
    assert strip_type_hints(code, "python").startswith("def add(self, name, qty=1):\n")
    buggy, change = inject_bug(code, "python", "seed")
    assert change == "+ → -" and "total = qty - 1" in buggy
    assert strip_comments("def f():\n    return 1\n", "python") is None  # nothing to strip
    assert strip_type_hints("def f(a):\n    return a\n", "python") is None


def test_unparseable_definitions_are_counted_not_emitted():
    sample = {"sample_id": "s", "task_type": "function_completion", "language": "python",
              "path": "x.py", "symbol": "f", "symbol_kind": "function",
              "context": "def f(:\n    ", "target": "return 1 + 2",
              "spans": {"context": [0, 12], "target": [12, 24], "definition": [0, 24]},
              "split_method": "ast", "parse_status": "error"}
    records, skips = build_records(sample, TEMPLATES)
    assert [r["task_type"] for r in records] == ["function_completion"]
    assert {(s["task_type"], s["reason"]) for s in skips} == {
        ("add_comments", "definition_unparseable"), ("refactor", "definition_unparseable"),
        ("debug", "definition_unparseable"), ("type_hints", "definition_unparseable")}


def test_records_from_samples_fill_every_placeholder():
    text = (FIXTURES / "inventory.py").read_text()
    res = split_file(text, "python", "inventory.py", "inv", SplitParams(
        fim_rate=1.0, max_samples_per_file=100))
    tasks = set()
    for s in res.samples:
        s.update(file_id="inv", repo="shop", path="inventory.py", language="python",
                 parse_status=res.parse_status)
        records, _ = build_records(s, TEMPLATES, {"alpha_fraction": 0.6, "max_line_length": 40})
        for r in records:
            tasks.add(r["task_type"])
            user = r["messages"][1]["content"]
            instruction = user.split("\n\n", 1)[0]
            assert not re.search(r"\{[a-z_]+\}", instruction)
            assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    assert tasks >= {"function_completion", "class_completion", "docstring", "explain", "fim",
                     "refactor", "debug", "implement_from_spec"}


def test_quality_and_weights():
    q, parts = quality_score({"alpha_fraction": 0.75, "max_line_length": 80, "documented": True,
                              "target": "# add\nx = 1\ny = 2\n", "language": "python",
                              "split_method": "ast", "parse_status": "ok"})
    assert parts == {"alpha": 1.0, "lines": 1.0, "docs": 1.0, "comments": 1.0, "length": 1.0,
                     "parse": 1.0}
    assert q == 1.0
    q2, _ = quality_score({"alpha_fraction": 0.25, "max_line_length": 1000, "target": "x",
                           "split_method": "fallback", "cut": "context_cut"})
    assert q2 == pytest.approx(0.9 * (0.1 * 0.5 + 0.15 * 0.3))
    assert raw_weight(0.7) == 1.0
    assert raw_weight(0.9) == pytest.approx(math.exp(1.0))
    # the seed's comments say 1.0 → 20.1, which is exp(10·0.3); its code (and the issue) say 5
    assert raw_weight(1.0) == pytest.approx(math.exp(1.5))


def test_tool_calls_are_validated():
    good = [{"id": "call_1", "type": "function",
             "function": {"name": "write_file", "arguments": '{"path": "a.py"}'}}]
    validate_tool_calls(good)
    for bad, msg in [
        ([{**good[0], "type": "tool"}], "type must be 'function'"),
        ([{**good[0], "function": {"name": "w", "arguments": "{oops"}}], "not JSON"),
        ([{**good[0], "function": {"name": "w", "arguments": "[1]"}}], "JSON object"),
        ([{"id": "x", "function": good[0]["function"]}], "keys must be"),
    ]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            validate_tool_calls(bad)


def test_chatml_rendering_and_token_counts(tmp_path):
    messages = [{"role": "system", "content": "S", "tool_calls": None},
                {"role": "user", "content": "U", "tool_calls": None},
                {"role": "assistant", "content": "A", "tool_calls": [
                    {"id": "c", "type": "function",
                     "function": {"name": "write_file", "arguments": '{"path": "t.py"}'}}]}]
    assert render(messages) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        '<|im_start|>assistant\nA\n<tool_call>\n{"name": "write_file", "arguments": '
        '{"path": "t.py"}}\n</tool_call><|im_end|>\n')
    path = train_tokenizer([p.read_text() for p in FIXTURES.iterdir()], tmp_path / "tok", 500)
    tok = load_tokenizer(str(path))
    assert tok.convert_tokens_to_ids("<|im_start|>") != tok.unk_token_id
    ids = tok(render(messages), add_special_tokens=False)["input_ids"]
    assert count_tokens(tok, [messages]) == [len(ids)]
    assert tok.convert_ids_to_tokens(ids[:1]) == ["<|im_start|>"]


def test_doc_comment_lookup_is_linear_on_long_comment_runs():
    import time

    from udfs.sft import definition_docs

    before = "// line\n" * 20000 + "int x;\n" + "/** Adds. */\n"
    started = time.perf_counter()
    assert definition_docs("int add(int a) { return a; }", before, "c") == "/** Adds. */"
    assert definition_docs("int f(void) {}", "// a\n// b\n", "c") == "// a\n// b"
    assert definition_docs("int f(void) {}", "/* plain */\n", "c") is None
    assert definition_docs("int f(void) {}", "// c\n" * 50000 + "int x;\n", "c") is None
    assert time.perf_counter() - started < 0.5
    assert definition_docs('def f(a: int):\n    """Doc."""\n    return a\n', "", "python") == (
        '"""Doc."""')
    assert definition_docs("@d\ndef f():\n    return 1\n", "", "python") is None


@pytest.mark.parametrize(("code", "name", "params"), [
    ("def add(self, x: int = 1) -> int:", "add", "(self, x: int = 1)"),
    ("fn map<T: Clone>(items: Vec<T>) {", "map", "(items: Vec<T>)"),
    ("int maybe_add(int a) { add (a,\n  f(b)); }", "add", "(a, f(b))"),  # not inside maybe_add
    ("public Foo<K>x(int a)", "Foo", ""),  # a generic must be followed by the parameters
    ("add<T(int a)", "add", ""),  # an unclosed generic
    ("Point() ~Point(int i)", "~Point", ""),  # ~ after a space is no word boundary
    ("x~Point(int i)", "~Point", "(int i)"),
])
def test_params_are_the_brackets_after_the_name(code, name, params):
    from udfs.sft import _params

    assert _params(code, name) == params

"""udfs.decontam: the published formats load, both methods find a planted problem, trivial code
and unrelated code stay."""

from __future__ import annotations

import gzip
import json
import pickle
import re

import pytest

from udfs.decontam import (
    Decontaminator,
    load_benchmarks,
    load_ds1000,
    load_humaneval,
    load_mbpp,
    normalize,
)

MBPP_ROW = {"task_id": 17, "text": "Write a function to find the perimeter of a square given the "
            "length of its side as an integer.",
            "code": "def square_perimeter(a):\n  perimeter=4*a\n  return perimeter",
            "test_list": ["assert square_perimeter(10)==40"]}


def test_humaneval_bundled_with_the_package():
    items = load_humaneval()
    assert len(items) == 164 and items[0].task_id == "HumanEval/0"
    assert "def has_close_elements" in items[0].prompt
    assert "for idx, elem in enumerate(numbers)" in items[0].solution


def test_published_formats_load(tmp_path):
    (tmp_path / "mbpp.jsonl").write_text(json.dumps(MBPP_ROW) + "\n")
    (tmp_path / "sanitized-mbpp.json").write_text(json.dumps([
        {"source_file": "x", "task_id": 17, "prompt": MBPP_ROW["text"], "code": MBPP_ROW["code"],
         "test_imports": [], "test_list": MBPP_ROW["test_list"]}]))
    with gzip.open(tmp_path / "MbppPlus.jsonl.gz", "wt") as f:
        f.write(json.dumps({"task_id": "Mbpp/17", "prompt": '"""\n' + MBPP_ROW["text"]
                            + '\n"""\n', "canonical_solution": MBPP_ROW["code"],
                            "entry_point": "square_perimeter"}) + "\n")
    with gzip.open(tmp_path / "HumanEvalPlus.jsonl.gz", "wt") as f:
        f.write(json.dumps({"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f",
                            "canonical_solution": "    return 1\n"}) + "\n")
    (tmp_path / "ds1000.jsonl").write_text(json.dumps({
        "prompt": "Problem:\nHow do I shuffle the rows of a pandas DataFrame?\nA:\n<code>\n",
        "reference_code": "result = df.sample(frac=1)", "metadata": {"problem_id": 3}}) + "\n")
    [mbpp] = load_mbpp(tmp_path / "mbpp.jsonl")
    [sanitized] = load_mbpp(tmp_path / "sanitized-mbpp.json")
    [plus] = load_mbpp(tmp_path / "MbppPlus.jsonl.gz", "mbppplus")
    assert (mbpp.task_id, mbpp.prompt, mbpp.solution) == ("17", MBPP_ROW["text"], MBPP_ROW["code"])
    assert (sanitized.prompt, sanitized.solution) == (mbpp.prompt, mbpp.solution)
    assert (plus.benchmark, plus.task_id, plus.solution) == ("mbppplus", "Mbpp/17", mbpp.solution)
    [ds] = load_ds1000(tmp_path / "ds1000.jsonl")
    assert (ds.benchmark, ds.task_id, ds.solution) == ("ds1000", "3", "result = df.sample(frac=1)")
    items = load_benchmarks({"humaneval": None,
                             "humanevalplus": str(tmp_path / "HumanEvalPlus.jsonl.gz"),
                             "ds1000": str(tmp_path / "ds1000.jsonl")})
    assert [i.benchmark for i in items].count("humaneval") == 164 and len(items) == 166
    with pytest.raises(ValueError, match="needs a local path"):
        load_benchmarks({"mbpp": None})


@pytest.fixture(scope="module")
def humaneval():
    return Decontaminator(load_humaneval())


def test_verbatim_and_reindented_problems_are_found(humaneval):
    item = load_humaneval()[12]  # HumanEval/12: longest
    verbatim = "import sys\n\n" + item.prompt + item.solution + "\n\nprint('done')\n"
    match = humaneval.check(verbatim)
    assert (match.benchmark, match.task_id, match.method) == ("humaneval", "HumanEval/12",
                                                             "substring")
    assert match.span in normalize(verbatim)
    in_class = "class Solutions:\n" + "".join(
        "    " + line + "\n" for line in (item.prompt + item.solution).splitlines())
    assert humaneval.check(in_class).task_id == "HumanEval/12"


def test_renamed_locals_are_found_by_ngrams():
    items = load_humaneval()
    only_ngrams = Decontaminator(items, substring=False)
    item = items[0]
    solution = item.solution
    for name in ("idx", "elem", "distance"):
        solution = re.sub(rf"\b{name}\b", name + "_renamed", solution)
    code = item.prompt.replace('"""', "'''") + solution
    match = only_ngrams.check(code)
    assert (match.task_id, match.method) == ("HumanEval/0", "ngram") and match.share >= 0.5
    detail = json.loads(match.detail())
    assert detail["benchmark"] == "humaneval" and detail["method"] == "ngram"


def test_trivial_and_unrelated_code_is_clean(humaneval):
    assert humaneval.check("def add(x, y):\n    return x + y\n") is None
    assert humaneval.check("def has_close_elements(a, b):\n    return a < b\n") is None
    assert humaneval.check("import os\nfor root, dirs, files in os.walk('.'):\n"
                           "    print(root, len(files))\n") is None


def test_broadcastable(humaneval):
    copy = pickle.loads(pickle.dumps(humaneval))  # the automaton is rebuilt on first use
    item = load_humaneval()[3]
    assert copy.check(item.prompt + item.solution).task_id == "HumanEval/3"

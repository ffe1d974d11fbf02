"""Every rule that scans text, on input built to make it backtrack or rescan
(tests/hostile.PATHOLOGICAL): each grows linearly with the input. A regex with catastrophic
backtracking grows exponentially and a rescan per match quadratically; going from 32 KB to 256 KB
(8×) such a rule takes 64× or more, a linear one 8× (the bound allows 16×, plus 0.25 s of noise).
Time per rule at 1 MB: bench/hostile_rules.py."""

from __future__ import annotations

import time

import pytest

from tests.hostile import PATHOLOGICAL, text_rules

RULES = text_rules()
for _rule in RULES.values():  # compiled kernels, lazily built automata: not part of the growth
    _rule("warm up x = 1\n")


def seconds(rule, text: str) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        rule(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("kind", list(PATHOLOGICAL))
def test_every_text_rule_grows_linearly_on(kind):
    make = PATHOLOGICAL[kind]
    small, large = make(32_000), make(256_000)
    slow = {}
    for name, rule in RULES.items():
        t_small, t_large = seconds(rule, small), seconds(rule, large)
        if t_large > 16 * t_small + 0.25:
            slow[name] = (round(t_small, 4), round(t_large, 4))
    assert not slow

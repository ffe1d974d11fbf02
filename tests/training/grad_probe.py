"""Run by test_train under torchrun: the trainer's own ``setup`` and ``train_step`` for optimizer
step 0, then the step's loss and every LoRA gradient (gathered from the ZeRO-3 partitions just
before the update) saved by rank 0 to ``argv[1]``; the rest of argv is the trainer's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from deepspeed.utils import safe_get_full_grad  # noqa: E402

from training.recipe import load_recipe  # noqa: E402
from training.train import setup, train_step  # noqa: E402


def main() -> None:
    target, args = sys.argv[1], sys.argv[2:]
    recipe = load_recipe(args[args.index("--recipe") + 1],
                         [args[i + 1] for i, a in enumerate(args) if a == "--set"])
    tr = setup(recipe, cpu=True)
    grads: dict[str, torch.Tensor] = {}

    def gather(trainer) -> None:
        for name, p in trainer.engine.module.model.named_parameters():
            if p.requires_grad:
                grads[name] = safe_get_full_grad(p).detach().clone().cpu()

    metrics = train_step(tr, 0, before_update=gather)
    if tr.rank == 0:
        torch.save({"loss": metrics["loss"], "label_tokens": metrics["label_tokens"],
                    "rows": tr.schedule.step_rows(0), "grads": grads}, target)
    torch.distributed.barrier()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

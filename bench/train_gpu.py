"""Training throughput on one GPU: tokens/s, MFU and peak memory against the planner (issue 6).

What runs is the training path of ``training/train.py`` — ``build_model`` (a Qwen2-architecture
model from config, no weights), PEFT LoRA with the 32B recipe's r/alpha/targets, DeepSpeed ZeRO-3
from ``conf/deepspeed/zero3.json`` with the recipe's ``deepspeed_config``, bf16, gradient
checkpointing, ``training.model.WeightedLM``'s chunked weighted loss — on packed rows of random
token ids (throughput does not depend on the tokens): each row of ``seq`` tokens holds several samples whose position ids restart at 0,
as ``training.data`` packs them. Default model: Qwen2.5-Coder-1.5B's shapes (28 layers, hidden
1536, intermediate 8960, 12 query / 2 key-value heads, vocab 151936, tied embeddings; its
config.json), seq 4096, micro-batch 1.

**FLOPs per step** (model FLOPs: gradient-checkpointing recomputation is not counted, as in MFU's
definition, Chowdhery et al. 2022, "PaLM", appendix B):

    F = tokens · (4·N_frozen + 6·N_lora) + 6 · L · h · Σ_samples l²

N_frozen = matrix-multiply weights of the base (every layer's q/k/v/o/gate/up/down plus the
lm_head, V·h; embeddings lookups are free): 2 FLOPs per weight forward, 2 backward for the
activation gradient, none for a frozen weight's own gradient. N_lora = LoRA's A and B: 2 + 2 + 2
(forward, activation gradient, weight gradient) — the 6N rule for the trainable part. Attention
scores: per layer a causal sample of length l costs 2·h·l² forward (QKᵀ and AV over the lower
triangle) and twice that backward. The samples of a packed row attend only within themselves
(l = each sample's length) with ``flash_attention_2`` and with sdpa's block mask alike; sdpa
computes the masked-out blocks all the same, which MFU does not count as useful work.
MFU = F / step time / the GPU's dense bf16 peak (H100 SXM and H200: 989 TFLOPS; H100 NVL: 835;
H100 PCIe: 756; A100: 312 — the vendors' data sheets; ``--peak-tflops`` for others).

**Memory**: ``torch.cuda.max_memory_reserved`` over the measured steps against the planner's
(``training.plan``) prediction for the same shapes on one GPU, less the planner's fixed 2.5 GB
(CUDA context and NCCL, outside PyTorch's allocator); the process's whole use from
``cudaMemGetInfo`` is reported too.

    python bench/train_gpu.py [--steps 10] [--seq 4096]      # on a GPU
    DS_ACCELERATOR=cpu python bench/train_gpu.py --smoke     # tiny model on CPU: checks the bench

Writes ``bench/results/train_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
QWEN_1_5B = {"num_layers": 28, "hidden_size": 1536, "intermediate_size": 8960,
             "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
             "tie_word_embeddings": True}
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
               ("A100", 312.0))  # dense bf16 TFLOPS; the first name found in the device's wins


def step_flops(arch, lora_params: int, tokens: int, sample_lengths: list[int]) -> float:
    """Model FLOPs of one optimizer step (see the module docstring)."""
    frozen = arch.num_layers * sum(a * b for a, b in arch.projections().values()) + (
        arch.vocab_size * arch.hidden_size)
    attention = 6 * arch.num_layers * arch.hidden_size * sum(n * n for n in sample_lengths)
    return tokens * (4 * frozen + 6 * lora_params) + attention


def packed_lengths(seq: int, rng: random.Random) -> list[int]:
    """Sample lengths filling one row of ``seq`` tokens: exponential with mean min(700, seq/4),
    at least 32, the last one cut to fit. 700 tokens for an instruction record (a prompt and a
    function) is a stated assumption; it only matters for the attention term of the FLOPs."""
    mean = min(700, max(32, seq // 4))
    lengths, left = [], seq
    while left > 0:
        n = min(left, max(32, int(rng.expovariate(1 / mean))))
        lengths.append(n)
        left -= n
    return lengths


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((tf for key, tf in PEAK_TFLOPS if key in name), None)


def _single_rank_env() -> None:
    """What a launcher would set, for one process."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("LOCAL_RANK", "0"),
                       ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)


def _saved_and_reloadable(recipe, folder: Path):
    """Save the recipe's from-config model to ``folder`` and return the recipe pointed at it
    with ``from_config: false`` (the trainer's own ``build_model`` loads it back)."""
    from training.model import build_model

    if not (folder / "config.json").exists():
        build_model(recipe, recipe.model.vocab_size).save_pretrained(str(folder))
    return recipe.model_copy(update={"model": recipe.model.model_copy(
        update={"name": str(folder), "from_config": False})})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "conf/train/qwen2.5-coder-32b-lora.yaml"),
                    help="LoRA, DeepSpeed and precision settings come from this recipe")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10, help="measured steps (after 2 warm-up)")
    ap.add_argument("--attn", choices=["flash_attention_2", "sdpa"], default=None,
                    help="default: flash_attention_2 when flash_attn imports, else sdpa")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not known")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny-cpu recipe's model, seq 128, 2 steps: checks the bench on CPU")
    ap.add_argument("--out", help="default: bench/results/train_gpu.json (smoke: _smoke.json)")
    ap.add_argument("--from-pretrained", metavar="DIR",
                    help="save the model built from config to DIR (save_pretrained, "
                         "safetensors) and train it loaded back with from_pretrained under "
                         "ZeRO-3's sharded load, as the 32B recipe loads its weights")
    args = ap.parse_args(argv)
    args.out = args.out or str(ROOT / "bench/results" / (
        "train_gpu_smoke.json" if args.smoke else "train_gpu.json"))

    import torch

    from training.model import WeightedLM, build_model, lora
    from training.plan import plan
    from training.recipe import load_recipe, plan_input
    from training.train import deepspeed_config

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if args.smoke:
        recipe = load_recipe(ROOT / "conf/train/tiny-cpu.yaml", [
            "train.gpus_per_node=1", "train.micro_batch_size=1", "train.grad_accum=1"])
        seq, steps, attn = 128, 2, "sdpa"
    else:
        attn = args.attn
        if attn is None:
            try:
                import flash_attn  # noqa: F401
                attn = "flash_attention_2"
            except ImportError:
                attn = "sdpa"
        shapes = [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}"
                  for k, v in QWEN_1_5B.items()]
        recipe = load_recipe(args.recipe, shapes + [
            "model.name=qwen2-1.5b-from-config", "model.from_config=true",
            f"model.attn_implementation={attn}", f"data.max_length={args.seq}",
            "train.num_nodes=1", "train.gpus_per_node=1", "train.micro_batch_size=1",
            "train.grad_accum=1"])
        seq, steps = args.seq, args.steps
    _single_rank_env()
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")

    ds_config = deepspeed_config(recipe, 1)
    if args.from_pretrained:
        recipe = _saved_and_reloadable(recipe, Path(args.from_pretrained))
    model = build_model(recipe, recipe.model.vocab_size, ds_config=ds_config, cuda=cuda)
    attn = model.config._attn_implementation
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = lora(model, recipe)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.train.lr)
    engine, *_ = deepspeed.initialize(model=WeightedLM(model, recipe.train.loss_chunk_tokens),
                                      optimizer=optimizer, config=ds_config,
                                      model_parameters=trainable)
    engine.train()
    device = engine.device
    rng = random.Random(0)
    lengths = [packed_lengths(seq, rng) for _ in range(steps + 2)]

    def batch(row: list[int]):
        ids = torch.randint(0, recipe.model.vocab_size, (1, seq), device=device)
        positions = torch.cat([torch.arange(n) for n in row]).unsqueeze(0).to(device)
        return ids, positions

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i, row in enumerate(lengths):
        ids, positions = batch(row)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        total, n, _ = engine(ids, positions, ids, torch.ones_like(ids, dtype=torch.float32))
        loss = total / n
        engine.backward(loss)
        engine.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:  # two warm-up steps: allocator growth, kernel autotuning
            times.append(time.perf_counter() - started)
            losses.append(loss.item())

    arch = plan_input(recipe).arch
    lora_params = sum(p.numel() for p in trainable)
    measured = lengths[2:]
    attended = measured  # sdpa's block mask and flash-attention's varlen path alike
    flops = [step_flops(arch, lora_params, seq, row) for row in attended]
    seconds = sum(times)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(name, args.peak_tflops) if cuda else None
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else 8.0
    predicted = plan(plan_input(recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"gpu_memory_gb": gpu_gb})})))
    result = {
        "device": name, "attn": attn, "seq": seq, "steps": len(times),
        "loaded": "from_pretrained" if args.from_pretrained else "from_config",
        "model": {k: getattr(recipe.model, k) for k in QWEN_1_5B},
        "params_total": arch.total_params(), "params_lora": lora_params,
        "samples_per_row_mean": round(sum(len(r) for r in measured) / len(measured), 2),
        "seconds_per_step": round(seconds / len(times), 4),
        "tokens_per_s": round(seq * len(times) / seconds, 1),
        "model_flops_per_step": round(sum(flops) / len(flops)),
        "model_tflops_per_s": round(sum(flops) / seconds / 1e12, 6),
        "peak_tflops": peak,
        "mfu": round(sum(flops) / seconds / 1e12 / peak, 4) if peak else None,
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "planner_gib": {k: round(v, 3) for k, v in predicted.rows()},
        "planner_without_fixed_gib": round((predicted.total - predicted.fixed) / 2**30, 3),
    }
    if cuda:
        reserved = torch.cuda.max_memory_reserved() / 2**30
        free, total = torch.cuda.mem_get_info()
        result.update(
            peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3),
            peak_reserved_gib=round(reserved, 3),
            process_used_gib_at_end=round((total - free) / 2**30, 3),
            measured_over_planned=round(reserved / result["planner_without_fixed_gib"], 3))
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

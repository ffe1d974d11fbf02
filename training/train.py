"""LoRA fine-tuning on DeepSpeed ZeRO, reading gold.sft at a pinned Delta version, tracked in MLflow.

Single node, 8 GPUs::

    deepspeed --num_gpus 8 training/train.py --recipe conf/train/qwen2.5-coder-32b-lora.yaml

Multi-node (``conf/hostfile`` lists ``host slots=8`` per node; the output folder and the lakehouse
must be on a filesystem every node mounts)::

    deepspeed --hostfile conf/hostfile --num_nodes 4 --num_gpus 8 \\
        training/train.py --recipe conf/train/qwen2.5-coder-32b-lora.yaml --set train.num_nodes=4
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint head:29500 \\
        training/train.py --recipe conf/train/qwen2.5-coder-32b-lora.yaml --set train.num_nodes=4

CPU, two ranks (what CI runs)::

    DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 training/train.py \\
        --recipe conf/train/tiny-cpu.yaml --set data.tokenizer=tokenizers/tiny

What happens: the data is read at ``data.version`` (the latest if null, then pinned), tokenized
once by rank 0 into a cache the other ranks read (``training.data``); the base model is loaded
(or built from config) with gradient checkpointing and wrapped with PEFT LoRA; DeepSpeed runs
ZeRO with gradient accumulation and gradient clipping. The loss is the **weighted per-token
loss** of ``training.data`` (gold.sft's weights). Every ``save_steps`` optimizer steps all ranks
save a DeepSpeed checkpoint (model, optimizer, scheduler, and the data position and MLflow run id
as client state) under ``<output_dir>/checkpoints``; a rerun with the same output folder resumes
from the latest one automatically and continues the same MLflow run. At the end the LoRA
adapter is gathered from the ZeRO-3 shards and saved (``<output_dir>/adapter``), logged to MLflow
and, with ``mlflow.registered_model``, registered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.recipe import Recipe, load_recipe  # noqa: E402


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested recipe → ``a.b.c`` params, values as strings cut to MLflow's 6,000-char limit."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v) if isinstance(v, (list, tuple)) else str(v))[:6000]
    return out


def deepspeed_config(recipe: Recipe, world: int) -> dict[str, Any]:
    """The recipe's DeepSpeed JSON with every ``auto`` filled from the recipe."""
    t = recipe.train
    cfg = t.deepspeed_config()
    cfg["train_micro_batch_size_per_gpu"] = t.micro_batch_size
    cfg["gradient_accumulation_steps"] = t.grad_accum
    cfg["train_batch_size"] = t.micro_batch_size * t.grad_accum * world
    cfg["gradient_clipping"] = t.grad_clip
    cfg["bf16"] = {"enabled": bool(t.bf16)}
    cfg["zero_allow_untested_optimizer"] = True  # torch AdamW over the LoRA parameters
    return cfg


def build_model(recipe: Recipe, vocab: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    m = recipe.model
    dtype = torch.bfloat16 if recipe.train.bf16 else torch.float32
    if m.from_config:
        if m.vocab_size < vocab:
            raise SystemExit(f"model.vocab_size {m.vocab_size} < tokenizer vocabulary {vocab}")
        torch.manual_seed(recipe.train.seed)  # every rank builds the same initial weights
        config = Qwen2Config(
            vocab_size=m.vocab_size, hidden_size=m.hidden_size,
            intermediate_size=m.intermediate_size, num_hidden_layers=m.num_layers,
            num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_key_value_heads,
            tie_word_embeddings=m.tie_word_embeddings, max_position_embeddings=max(
                4096, recipe.data.max_length))
        return AutoModelForCausalLM.from_config(config, torch_dtype=dtype,
                                                attn_implementation=m.attn_implementation)
    return AutoModelForCausalLM.from_pretrained(m.name, torch_dtype=dtype,
                                                attn_implementation=m.attn_implementation)


def lora(model, recipe: Recipe):
    from peft import LoraConfig, get_peft_model

    spec = recipe.lora
    return get_peft_model(model, LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules), task_type="CAUSAL_LM"))


def weighted_loss(logits, labels, weights):
    """Σ wₜ·CE(logitsₜ₋₁, labelₜ) / #label tokens (training.data's definition)."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    shift_w = weights[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                         shift_labels.reshape(-1), ignore_index=-100, reduction="none")
    mask = (shift_labels.reshape(-1) != -100).float()
    n = mask.sum().clamp(min=1.0)
    return (ce * shift_w.reshape(-1) * mask).sum() / n, n


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    return latest.read_text().strip() if latest.exists() else None


def main(argv: list[str] | None = None) -> int:
    import deepspeed
    import numpy as np
    import torch

    from training.data import prepare
    from udfs.chatml import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--local_rank", type=int, default=-1)  # the deepspeed launcher passes it
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    t = recipe.train
    cpu = os.environ.get("DS_ACCELERATOR") == "cpu" or not torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl",
                               timeout=timedelta(minutes=t.dist_timeout_min))
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    out = Path(t.output_dir)
    out = out if out.is_absolute() else Path.cwd() / out
    out.mkdir(parents=True, exist_ok=True)

    tok = load_tokenizer(recipe.data.tokenizer)
    packed, version, cache = prepare(recipe.data.lakehouse, recipe.data.table, recipe.data.version,
                                     tok, recipe.data.tokenizer, recipe.data.max_length,
                                     out / "data-cache", rank=rank)
    torch.distributed.barrier()

    model = build_model(recipe, len(tok))
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = lora(model, recipe)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # each rank takes every world-th sequence; all ranks run the same number of micro-steps
    n_seq = packed.input_ids.shape[0]
    per_rank = n_seq // world
    micro_per_epoch = max(per_rank // t.micro_batch_size, 1)
    steps_per_epoch = max(micro_per_epoch // t.grad_accum, 1)
    total_steps = t.max_steps or max(math.ceil(t.epochs * steps_per_epoch), 1)
    warmup = int(t.warmup_ratio * total_steps)

    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=deepspeed_config(recipe, world), model_parameters=trainable)

    ckpt_dir = out / "checkpoints"
    step, run_id = 0, None
    if latest_checkpoint(ckpt_dir) is not None:
        _, client = engine.load_checkpoint(str(ckpt_dir))
        step, run_id = int(client["step"]), client.get("mlflow_run_id")

    import mlflow

    if rank == 0:
        mlflow.set_tracking_uri(recipe.mlflow.tracking_uri or f"sqlite:///{out / 'mlflow.db'}")
        if mlflow.get_experiment_by_name(recipe.mlflow.experiment) is None:
            # artifacts beside the run's output, not in ./mlruns of whatever the cwd is
            mlflow.create_experiment(recipe.mlflow.experiment,
                                     artifact_location=(out / "mlartifacts").as_uri())
        mlflow.set_experiment(recipe.mlflow.experiment)
        run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
        run_id = run.info.run_id
        if step == 0:
            mlflow.log_params(flatten(recipe.model_dump(mode="json")))
            mlflow.log_params({"data.version_read": version, "data.cache": str(cache),
                               "world_size": world, "total_steps": total_steps,
                               "lora.trainable_params": sum(p.numel() for p in trainable)})
            _log_dataset(recipe, version, n_seq)
    run_ids = [run_id]
    torch.distributed.broadcast_object_list(run_ids, src=0)
    run_id = run_ids[0]

    device = engine.device
    order = np.arange(rank, per_rank * world, world)
    micro = step * t.grad_accum  # data position: micro-batches already consumed
    tokens, started = 0, time.perf_counter()
    while step < total_steps:
        i = micro % micro_per_epoch
        rows = order[i * t.micro_batch_size:(i + 1) * t.micro_batch_size]

        def tensor(a, dtype=torch.long, rows=rows):
            return torch.as_tensor(a[rows], dtype=dtype, device=device)

        ids, labels = tensor(packed.input_ids), tensor(packed.labels)
        logits = engine(input_ids=ids, position_ids=tensor(packed.position_ids)).logits
        loss, n = weighted_loss(logits, labels, tensor(packed.token_weights, torch.float32))
        engine.backward(loss)
        engine.step()
        micro += 1
        tokens += int(n.item())
        if micro % t.grad_accum:
            continue
        step += 1
        losses = torch.tensor([loss.item()], device=device)
        torch.distributed.all_reduce(losses)
        if rank == 0:
            elapsed = time.perf_counter() - started
            norm = engine.get_global_grad_norm()
            mlflow.log_metrics({"loss": losses.item() / world, "lr": scheduler.get_last_lr()[0],
                                "grad_norm": float(norm) if norm is not None else 0.0,
                                "tokens_per_second": tokens * world / max(elapsed, 1e-9)},
                               step=step)
        if step % t.save_steps == 0 or step == total_steps:
            engine.save_checkpoint(str(ckpt_dir), tag=f"step{step}",
                                   client_state={"step": step, "mlflow_run_id": run_id})
    # a fixed probe through the trained model, so a reloaded adapter can be checked against it
    probe = torch.as_tensor(packed.input_ids[:1, :32], dtype=torch.long, device=device)
    engine.eval()
    with torch.no_grad():
        probe_logits = engine(input_ids=probe).logits.float().cpu()
    if rank == 0:
        torch.save({"input_ids": probe.cpu(), "logits": probe_logits}, out / "probe.pt")
    save_adapter(engine, out / "adapter", rank)
    if rank == 0:
        mlflow.log_artifacts(str(out / "adapter"), artifact_path="adapter")
        if recipe.mlflow.registered_model:
            register_adapter(run_id, recipe.mlflow.registered_model)
        mlflow.end_run()
        (out / "run.json").write_text(json.dumps({"mlflow_run_id": run_id, "steps": step,
                                                  "data_version": version}) + "\n")
    torch.distributed.barrier()
    return 0


def _log_dataset(recipe: Recipe, version: int, sequences: int) -> None:
    """The input table with its Delta path and version, as an MLflow dataset input."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    layer, _, name = recipe.data.table.partition(".")
    path = str(Path(recipe.data.lakehouse).resolve() / layer / name)
    source = DeltaDatasetSource(path=path, delta_table_version=version)
    mlflow.log_input(MetaDataset(source=source, name=f"{recipe.data.table}@{version}"),
                     context="training")
    mlflow.set_tags({"data.table": recipe.data.table, "data.path": path,
                     "data.version": str(version), "data.sequences": str(sequences)})


def register_adapter(run_id: str, name: str):
    """A model-registry version whose source is the run's ``adapter`` artifact folder. (MLflow 3's
    ``register_model("runs:/…")`` wants a logged model flavor; a PEFT adapter folder is not one.)"""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.tracking.MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    run = client.get_run(run_id)
    return client.create_model_version(name, source=f"{run.info.artifact_uri}/adapter",
                                       run_id=run_id)


def merge_adapter(recipe: Recipe, adapter: str | Path, target: str | Path) -> Path:
    """Fold the LoRA adapter into the base weights and save a plain HF model (for export)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(build_model(recipe, 0), str(adapter))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(target))
    return Path(target)


def save_adapter(engine, target: Path, rank: int) -> None:
    """Gather the LoRA weights from their ZeRO-3 shards and save the PEFT adapter on rank 0."""
    import deepspeed

    model = engine.module
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    with deepspeed.zero.GatheredParameters(lora_params, modifier_rank=None):
        if rank == 0:
            model.save_pretrained(str(target))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())


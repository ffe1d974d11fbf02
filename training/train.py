"""LoRA fine-tuning on DeepSpeed ZeRO, reading gold.sft at a pinned Delta version, tracked in MLflow.

Single node, 8 GPUs::

    deepspeed --num_gpus 8 training/train.py --recipe conf/train/qwen2.5-coder-32b-lora.yaml

Multi-node (``conf/hostfile`` lists ``host slots=8`` per node; the output folder and the lakehouse
must be on a filesystem every node mounts; ``codemill launch --write`` writes a hostfile and the
``.deepspeed_env`` the launcher exports to every node)::

    deepspeed --hostfile conf/hostfile --num_nodes 4 --num_gpus 8 \\
        training/train.py --recipe conf/train/qwen2.5-coder-32b-lora.yaml --set train.num_nodes=4
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint head:29500 \\
        training/train.py --recipe conf/train/qwen2.5-coder-32b-lora.yaml --set train.num_nodes=4

CPU, two ranks (what CI runs)::

    DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 training/train.py \\
        --recipe conf/train/tiny-cpu.yaml --set data.tokenizer=tokenizers/tiny

What happens (``setup``, then ``train_step`` per optimizer step):

1. Rank 0 decides the data: the checkpoint to resume and the gold.sft version it trained on, else
   ``data.version`` or the latest; every rank gets that decision by broadcast. Rank 0 tokenizes
   once into a cache the other ranks read (``training.data``).
2. The base model loads sharded (``training.model.build_model``: ``HfDeepSpeedConfig`` before
   ``from_pretrained``), with gradient checkpointing and PEFT LoRA; the DeepSpeed engine wraps
   ``training.model.WeightedLM`` and is put in train mode.
3. Each step's loss is the global weighted token mean of the step (``train_step``).
4. Every ``save_steps`` steps every rank saves its LoRA and optimizer shards (no frozen weight);
   then rank 0 writes the checkpoint's manifest (step, data version, token-cache key, MLflow run
   id) and replaces ``latest`` atomically (``save_checkpoint``). A rerun with the same output
   folder resumes from it and continues the same MLflow run.
5. After the first step each rank writes ``preflight/rank<N>.json``: what it holds after the
   sharded load, train mode, recomputation, the KV cache, the attention implementation.
6. At the end the LoRA adapter is gathered from the ZeRO-3 shards and saved
   (``<output_dir>/adapter``), logged to MLflow and, with ``mlflow.registered_model``, registered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.recipe import Recipe, load_recipe  # noqa: E402
from udfs.tracking import (  # noqa: E402
    PIPELINE_RUN_TAG,
    RUN_ID_TAG,
    experiment_id,
    flatten,
    pipeline_run_for,
    tracking_uri,
)


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


def resolve_run(ckpt_dir: Path, recipe: Recipe, rank: int) -> tuple[str | None, dict, int]:
    """(checkpoint tag to resume, its manifest, the gold.sft version to train on), decided by
    rank 0 and broadcast, so every rank reads the same data even if the table moves meanwhile.

    A resumed run trains on the version its checkpoint recorded, never on a newer "latest"; an
    explicit ``data.version`` that differs from it is refused."""
    import torch

    decided: list[Any] = [None, {}, None, None]
    if rank == 0:
        try:
            tag = latest_checkpoint(ckpt_dir)
            manifest = read_manifest(ckpt_dir, tag) if tag else {}
            version = manifest.get("data_version", recipe.data.version)
            if tag and recipe.data.version is not None and recipe.data.version != version:
                raise SystemExit(f"data.version={recipe.data.version}, but {ckpt_dir / tag} was "
                                 f"trained on version {version}: resume with the same version or "
                                 "a new train.output_dir")
            if version is None:
                from training.data import table_version

                version = table_version(recipe.data.lakehouse, recipe.data.table)
            decided = [tag, manifest, version, None]
        except BaseException as exc:  # noqa: BLE001 - every rank must leave the broadcast
            decided = [None, {}, None, f"{type(exc).__name__}: {exc}"]
    torch.distributed.broadcast_object_list(decided, src=0)
    if decided[3]:
        raise SystemExit(f"rank {rank}: rank 0 could not resolve the run: {decided[3]}")
    return decided[0], decided[1], decided[2]


# --- checkpoints -----------------------------------------------------------------------------
# DeepSpeed writes one set of files per rank and, by default, rank 0 writes ``latest`` without
# waiting for the others. Here ``latest`` names a tag only after every rank's files are on disk
# (a barrier), with a manifest of those files, and is replaced atomically: a kill at any moment
# leaves it pointing at a complete checkpoint.

MANIFEST = "codemill.json"


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    tag = latest.read_text().strip() if latest.exists() else None
    return tag if tag and (ckpt_dir / tag / MANIFEST).exists() else None


def read_manifest(ckpt_dir: Path, tag: str) -> dict[str, Any]:
    return json.loads((ckpt_dir / tag / MANIFEST).read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(engine, ckpt_dir: Path, step: int, state: dict[str, Any], rank: int,
                    keep: int) -> str:
    """Every rank's LoRA + optimizer shards (no frozen weight), then the manifest and ``latest``
    on rank 0, then the oldest complete checkpoints beyond ``keep`` and any incomplete ones
    removed."""
    import shutil

    import torch

    tag = f"step{step}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=state, save_latest=False,
                           exclude_frozen_parameters=True)
    torch.distributed.barrier()  # every rank's files are written
    if rank == 0:
        folder = ckpt_dir / tag
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
        _write_atomic(folder / MANIFEST, json.dumps({**state, "tag": tag, "files": files},
                                                    indent=1) + "\n")
        _write_atomic(ckpt_dir / "latest", tag)
        tags = sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step")),
                      key=lambda p: int(p.name.removeprefix("step") or -1))
        complete = [p for p in tags if (p / MANIFEST).exists()]
        for old in [p for p in tags if p not in complete] + complete[:-keep]:
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
    torch.distributed.barrier()
    return tag


# --- the data each rank reads ------------------------------------------------------------------

@dataclass
class Schedule:
    """Which packed rows each rank reads at each micro-step: rank r takes every world-th row
    starting at r, micro-batches of ``micro`` rows in order, epochs repeating that order."""

    sequences: int
    world: int
    micro: int
    grad_accum: int

    @property
    def micro_per_epoch(self) -> int:
        return max(self.sequences // self.world // self.micro, 1)

    @property
    def steps_per_epoch(self) -> int:
        return max(self.micro_per_epoch // self.grad_accum, 1)

    def rows(self, micro_step: int, rank: int) -> list[int]:
        i = micro_step % self.micro_per_epoch
        per_rank = self.sequences // self.world
        order = list(range(rank, per_rank * self.world, self.world)) or [rank % self.sequences]
        return order[i * self.micro:(i + 1) * self.micro]

    def step_rows(self, step: int) -> list[int]:
        """Every row any rank reads in optimizer step ``step`` (with repeats)."""
        return [r for m in range(step * self.grad_accum, (step + 1) * self.grad_accum)
                for rank in range(self.world) for r in self.rows(m, rank)]


def label_tokens(labels, rows: list[int]) -> int:
    """Tokens that carry a loss in ``rows`` (shifted labels ≠ −100): the step's denominator."""
    from training.data import IGNORE

    return int(sum((labels[r, 1:] != IGNORE).sum() for r in rows))


@dataclass
class Trainer:
    """What one rank holds while it trains; built by ``setup``, advanced by ``train_step``."""

    recipe: Recipe
    engine: Any
    scheduler: Any
    packed: Any
    schedule: Schedule
    rank: int
    world: int
    out: Path
    data_version: int
    cache_key: str
    total_steps: int
    resume_tag: str | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"


def setup(recipe: Recipe, cpu: bool) -> Trainer:
    """Distributed init, the pinned data, the model sharded at load, LoRA, the DeepSpeed engine
    in train mode, and the checkpoint to resume (its LoRA and optimizer state loaded)."""
    import deepspeed
    import torch

    from training.data import cache_key, prepare
    from training.model import WeightedLM, build_model, lora
    from udfs.chatml import load_tokenizer

    t = recipe.train
    deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl",
                               timeout=timedelta(minutes=t.dist_timeout_min))
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    out = Path(t.output_dir)
    out = out if out.is_absolute() else Path.cwd() / out
    out.mkdir(parents=True, exist_ok=True)
    tag, manifest, version = resolve_run(out / "checkpoints", recipe, rank)

    tok = load_tokenizer(recipe.data.tokenizer)
    key = cache_key(recipe.data.lakehouse + "/" + recipe.data.table, version,
                    recipe.data.tokenizer, recipe.data.max_length, "train")
    if manifest and manifest.get("cache_key") not in (None, key):
        raise SystemExit(f"{out / 'checkpoints' / tag} was trained on token cache "
                         f"{manifest['cache_key']}, this recipe gives {key} (tokenizer or "
                         "data.max_length changed): use a new train.output_dir")
    packed, version, _ = prepare(recipe.data.lakehouse, recipe.data.table, version, tok,
                                 recipe.data.tokenizer, recipe.data.max_length,
                                 out / "data-cache", rank=rank)
    torch.distributed.barrier()

    ds_config = deepspeed_config(recipe, world)
    model = build_model(recipe, len(tok), ds_config=ds_config, cuda=not cpu)
    report = {"rank": rank, "world": world, **load_report(model)}
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(t.seed)  # the same LoRA initialization on every rank and every run
    model = lora(model, recipe)
    trainable = [p for p in model.parameters() if p.requires_grad]
    report["attn_implementation"] = model.get_base_model().config._attn_implementation

    schedule = Schedule(packed.input_ids.shape[0], world, t.micro_batch_size, t.grad_accum)
    total_steps = t.max_steps or max(math.ceil(t.epochs * schedule.steps_per_epoch), 1)
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.scheduler, optimizer,
                              num_warmup_steps=int(t.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    engine, _, _, scheduler = deepspeed.initialize(
        model=WeightedLM(model, t.loss_chunk_tokens), optimizer=optimizer,
        lr_scheduler=scheduler, config=ds_config, model_parameters=trainable)
    engine.train()  # from_pretrained returns eval mode: no checkpointing, no dropout
    if tag is not None:
        engine.load_checkpoint(str(out / "checkpoints"), tag=tag, load_module_strict=False)
    report["lora_trainable_params"] = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                                          for p in trainable)
    return Trainer(recipe, engine, scheduler, packed, schedule, rank, world, out, version, key,
                   total_steps, tag, report)


def load_report(model) -> dict[str, Any]:
    """How the base model sits on this rank right after loading: under ZeRO-3 each parameter
    holds only its shard (``ds_tensor``) and an empty ``data``."""
    full = local = 0
    partitioned = True
    for p in model.parameters():
        if hasattr(p, "ds_numel"):
            full += p.ds_numel
            local += p.ds_tensor.numel()
            partitioned &= p.numel() == 0
        else:
            full += p.numel()
            local += p.numel()
            partitioned = False
    return {"params_total": full, "params_on_rank": local, "partitioned_at_load": partitioned}


def train_step(tr: Trainer, step: int, before_update=None) -> dict[str, float]:
    """One optimizer step (``grad_accum`` micro-batches on every rank).

    The loss is the step's global weighted token mean, Σ wₜ·ℓₜ over every label token of every
    micro-batch on every rank, divided by the number of those tokens (computed from the packed
    rows, which every rank holds, so no collective is needed). DeepSpeed divides each
    micro-batch's loss by ``grad_accum`` and averages gradients over ranks, so each micro-batch's
    sum is scaled by grad_accum · world / N: the result does not depend on how the step's rows are
    spread over ranks and micro-batches, nor on how many labels share a micro-batch (the
    gradient-accumulation normalization transformers fixed in 4.46). ``before_update`` is called
    before the last micro-batch's ``engine.step()``, with the gradients complete.
    """
    import torch

    t, p, engine = tr.recipe.train, tr.packed, tr.engine
    n_global = label_tokens(p.labels, tr.schedule.step_rows(step))
    scale = t.grad_accum * tr.world / max(n_global, 1)
    device = engine.device
    loss_sum, tokens = 0.0, 0
    for m in range(step * t.grad_accum, (step + 1) * t.grad_accum):
        rows = tr.schedule.rows(m, tr.rank)

        def tensor(a, dtype=torch.long, rows=rows):
            return torch.as_tensor(a[rows], dtype=dtype, device=device)

        total, _, cached = engine(tensor(p.input_ids), tensor(p.position_ids), tensor(p.labels),
                                 tensor(p.token_weights, torch.float32))
        tr.report.setdefault("kv_cache_built", bool(cached))
        engine.backward(total * scale)
        if before_update is not None and m == (step + 1) * t.grad_accum - 1:
            before_update(tr)
        engine.step()
        loss_sum += float(total.detach())
        tokens += sum(sum(p.seq_lens[r]) for r in rows)
    sums = torch.tensor([loss_sum, float(tokens)], dtype=torch.float64)
    torch.distributed.all_reduce(sums)
    return {"loss": sums[0].item() / max(n_global, 1), "label_tokens": n_global,
            "tokens": int(sums[1].item())}


def count_layer_calls(tr: Trainer):
    """A forward pre-hook on the first decoder layer's MLP: with gradient checkpointing it runs
    twice per micro-batch (forward, then recomputed in backward). Not a hook on the layer itself:
    transformers checkpoints the layer's ``forward``, so its hooks stay outside the recompute;
    not a post-hook: the recompute stops early, once the tensors backward needs exist."""
    layers = tr.engine.module.model.get_base_model().model.layers
    calls = [0]
    handle = layers[0].mlp.register_forward_pre_hook(
        lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls, handle.remove


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--local_rank", type=int, default=-1)  # the deepspeed launcher passes it
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    t = recipe.train
    cpu = os.environ.get("DS_ACCELERATOR") == "cpu" or not torch.cuda.is_available()
    tr = setup(recipe, cpu)
    rank, out = tr.rank, tr.out
    step, run_id = 0, None
    if tr.resume_tag is not None:
        manifest = read_manifest(tr.ckpt_dir, tr.resume_tag)
        step, run_id = int(manifest["step"]), manifest.get("mlflow_run_id")

    import mlflow

    if rank == 0:
        # the lakehouse's store, where the pipeline runs that made the data are too
        uri = tracking_uri(recipe.data.lakehouse, recipe.mlflow.tracking_uri)
        if uri:
            mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=experiment_id(
            mlflow.tracking.MlflowClient(), recipe.mlflow.experiment, recipe.data.lakehouse))
        run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
        run_id = run.info.run_id
        if step == 0:
            mlflow.log_params(flatten(recipe.model_dump(mode="json")))
            mlflow.log_params({"data.version_read": tr.data_version, "data.cache_key": tr.cache_key,
                               "world_size": tr.world, "total_steps": tr.total_steps,
                               "lora.trainable_params": tr.report["lora_trainable_params"],
                               "attn_implementation": tr.report["attn_implementation"],
                               "data.truncated": tr.packed.truncated,
                               "data.unlabeled": tr.packed.unlabeled})
            _log_dataset(recipe, tr.data_version, tr.schedule.sequences)
    run_ids = [run_id]
    torch.distributed.broadcast_object_list(run_ids, src=0)
    run_id = run_ids[0]

    started, tokens = time.perf_counter(), 0
    while step < tr.total_steps:
        first = not tr.report.get("checked")
        calls, remove = count_layer_calls(tr) if first else (None, None)
        metrics = train_step(tr, step)
        step += 1
        tokens += metrics["tokens"]
        if first:
            remove()
            base = tr.engine.module.model.get_base_model()
            tr.report.update(checked=True, training=base.training,
                             first_layer_calls_per_micro_batch=calls[0] / t.grad_accum)
            (out / "preflight").mkdir(exist_ok=True)
            _write_atomic(out / "preflight" / f"rank{rank}.json", json.dumps(tr.report) + "\n")
        if rank == 0:
            norm = tr.engine.get_global_grad_norm()
            mlflow.log_metrics({"loss": metrics["loss"], "lr": tr.scheduler.get_last_lr()[0],
                                "grad_norm": float(norm) if norm is not None else 0.0,
                                "tokens_per_second": tokens / max(time.perf_counter() - started,
                                                                  1e-9)}, step=step)
        if step % t.save_steps == 0 or step == tr.total_steps:
            save_checkpoint(tr.engine, tr.ckpt_dir, step,
                            {"step": step, "mlflow_run_id": run_id,
                             "data_version": tr.data_version, "cache_key": tr.cache_key},
                            rank, t.keep_checkpoints)
    # a fixed probe through the trained model, so a reloaded adapter can be checked against it
    device = tr.engine.device
    probe = torch.as_tensor(tr.packed.input_ids[:1, :32], dtype=torch.long, device=device)
    tr.engine.eval()
    with torch.no_grad():
        probe_logits = tr.engine.module.model(input_ids=probe, use_cache=False).logits
    if rank == 0:
        torch.save({"input_ids": probe.cpu(), "logits": probe_logits.float().cpu()},
                   out / "probe.pt")
    save_adapter(tr.engine, out / "adapter", rank)
    if rank == 0:
        mlflow.log_artifacts(str(out / "adapter"), artifact_path="adapter")
        mlflow.log_dict(tr.report, "preflight.json")
        if recipe.mlflow.registered_model:
            register_adapter(run_id, recipe.mlflow.registered_model)
        mlflow.end_run()
        (out / "run.json").write_text(json.dumps({"mlflow_run_id": run_id, "steps": step,
                                                  "data_version": tr.data_version}) + "\n")
    torch.distributed.barrier()
    # Left to interpreter shutdown, gloo's worker threads can outlive the interpreter and abort
    # the process (SIGABRT, "terminate called without an active exception": pytorch/pytorch
    # #190489) after a run that finished. Only on success: a rank that failed must not block in a
    # teardown its peers never reach (torchtitan #1342).
    torch.distributed.destroy_process_group()
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
    # the pipeline run that wrote this version of the table, linked from the run's description
    client = mlflow.tracking.MlflowClient()
    made = pipeline_run_for(client, recipe.data.lakehouse, recipe.data.table, version)
    if made is not None:
        link = f"#/experiments/{made.info.experiment_id}/runs/{made.info.run_id}"
        mlflow.set_tags({
            PIPELINE_RUN_TAG: made.info.run_id,
            "codemill.pipeline_run_id": made.data.tags.get(RUN_ID_TAG, ""),
            "mlflow.note.content": (f"Trained on {recipe.data.table}@{version}, written by "
                                    f"pipeline run [{made.info.run_name}]({link}).")})


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

    from training.model import build_model

    model = PeftModel.from_pretrained(build_model(recipe, 0), str(adapter))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(target))
    return Path(target)


def save_adapter(engine, target: Path, rank: int) -> None:
    """Gather the LoRA weights from their ZeRO-3 shards and save the PEFT adapter on rank 0."""
    import deepspeed

    model = engine.module.model  # the PEFT model inside training.model.WeightedLM
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    with deepspeed.zero.GatheredParameters(lora_params, modifier_rank=None):
        if rank == 0:
            model.save_pretrained(str(target))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())

